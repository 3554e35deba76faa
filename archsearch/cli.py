"""The `archsearch` command: one sub-command per module in `archsearch.commands`.

Each command module defines `HELP: str`, `add_arguments(parser)` and `run(args) -> int`.
Modules are imported lazily so `archsearch count` does not pay for Ray's import.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from archsearch import __version__
from archsearch.errors import ArchsearchError

COMMANDS = {
    "count": "archsearch.commands.count",
    "space": "archsearch.commands.space",
    "train": "archsearch.commands.train",
    "run": "archsearch.commands.run",
    "dashboard": "archsearch.commands.dashboard",
    "report": "archsearch.commands.report",
    "export": "archsearch.commands.export",
    "curves": "archsearch.commands.curves",
    "replay": "archsearch.commands.replay",
    "lesion": "archsearch.commands.lesion",
}


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one line naming the argument and the reason (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _available() -> dict[str, object]:
    modules = {}
    for name, path in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(path)
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != path:
                raise
    return modules


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="archsearch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"archsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = _available()
    for name, module in modules.items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except ArchsearchError as exc:
        print(f"archsearch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a second stop signal during `run` carries its number (signals.Stopped)
        signum = getattr(exc, "signum", 2)
        print(f"archsearch {args.command}: interrupted ({exc or 'SIGINT'}), stopped at once", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
