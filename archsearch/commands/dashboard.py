"""`archsearch dashboard STUDY.yaml`: optuna-dashboard on the study's storage, safe beside a running study."""

from __future__ import annotations

import argparse

HELP = "serve optuna-dashboard for a study's storage (reads while a study writes; SQLite in WAL mode)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("study", metavar="STUDY.yaml", help="the study file given to `archsearch run`")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the same overrides given to `archsearch run` (e.g. a different storage)")


def run(args: argparse.Namespace) -> int:
    import optuna_dashboard

    from archsearch.errors import ConfigError
    from archsearch.study.config import load_study
    from archsearch.study.storage import open_storage, redact, storage_exists, study_id

    config = load_study(args.study, args.overrides)
    url = config.storage_url
    if storage_exists(url) is False:
        raise ConfigError(f"{args.study}: storage: {redact(url)} does not exist yet; start the study with "
                          f"`archsearch run {args.study}`")
    storage = open_storage(url, where=args.study, create=False)
    sid = study_id(storage, config.name)
    artifacts = None
    if (config.run_dir / "artifacts").is_dir():
        from optuna.artifacts import FileSystemArtifactStore

        artifacts = FileSystemArtifactStore(str(config.run_dir / "artifacts"))
    base = f"http://{args.host}:{args.port}/dashboard/"
    where = f"{base}studies/{sid}" if sid is not None else f"{base} (study {config.name!r} not created yet)"
    print(f"optuna-dashboard for {config.name} on {redact(url)}: {where}", flush=True)
    print("stop with Ctrl-C", flush=True)
    optuna_dashboard.run_server(storage, host=args.host, port=args.port, artifact_store=artifacts)
    return 0
