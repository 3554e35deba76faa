"""`archsearch dashboard STUDY.yaml`: optuna-dashboard on the study's storage, safe beside a running study."""

from __future__ import annotations

import argparse
import socket

from archsearch.commands import port_number
from archsearch.errors import ConfigError

HELP = "serve optuna-dashboard for a study's storage (reads while a study writes; SQLite in WAL mode)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="the study file given to `archsearch run`")
    parser.add_argument("--port", type=port_number, default=8080, help="port to serve on, 1-65535 (default: 8080)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the same overrides given to `archsearch run` (e.g. a different storage)")
    parser.add_argument("--runs-dir", default=None, metavar="DIR",
                        help="the results folder `archsearch run` used (default: $ARCHSEARCH_RUNS, else ./runs)")


def run(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from archsearch.study.attachments import artifact_store
    from archsearch.study.config import load_study
    from archsearch.study.storage import open_storage, redact, storage_exists, study_id

    config = load_study(args.study, args.overrides, runs_dir=args.runs_dir)
    url = config.storage_url
    if storage_exists(url) is False:
        raise ConfigError(f"{args.study}: storage: {redact(url)} does not exist yet; start the study with "
                          f"`archsearch run {args.study}`")
    storage = open_storage(url, where=args.study, create=False)
    sid = study_id(storage, config.name)
    artifacts = artifact_store(config.run_dir)
    _check_port_free(args.host, args.port)
    base = f"http://{args.host}:{args.port}/dashboard/"
    where = f"{base}studies/{sid}" if sid is not None else f"{base} (study {config.name!r} not created yet)"
    print(f"optuna-dashboard for {config.name} on {redact(url)}: {where}", flush=True)
    print("stop with Ctrl-C", flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=artifacts)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """Fail before announcing a URL: optuna-dashboard's server would print "Listening" and then raise."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        reason = "is in use" if exc.errno in (98, 48) else f"cannot be used ({exc.strerror or exc})"
        raise ConfigError(f"--port {port} on {host} {reason}; choose another port with --port") from None
