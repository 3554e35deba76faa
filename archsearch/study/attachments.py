"""What a study carries besides its trials: the report attached to it, and the artifact store the dashboard reads.

The report is computed by `archsearch.analysis`; attaching it (user attributes, Optuna artifacts, a dashboard
note) is storage work, so it lives with the study.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Any

from optuna.artifacts import FileSystemArtifactStore, upload_artifact


def artifact_store(run_dir: Path) -> FileSystemArtifactStore | None:
    """The study's artifact store (runs/<study>/artifacts), or None before a report was attached."""
    folder = Path(run_dir) / "artifacts"
    return FileSystemArtifactStore(str(folder)) if folder.is_dir() else None


def attach_report(study: Any, report: Path, summary: str, artifact_dir: Path) -> str:
    """Make the report reachable from the dashboard: user attribute, artifacts, study note."""
    import optuna_dashboard  # lazy: the dashboard package loads only when a report is attached

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(artifact_dir)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(report), study_or_trial=study,
                                  mimetype="text/markdown", encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(report.parent, Path(tmp) / f"{study.study_name}-report.zip", exclude=artifact_dir)
        upload_artifact(artifact_store=store, file_path=str(bundle), study_or_trial=study,
                        mimetype="application/zip")
    study.set_user_attr("report_path", str(report.resolve()))
    study.set_user_attr("report_artifact_id", artifact_id)
    study.set_user_attr("artifact_dir", str(artifact_dir.resolve()))
    note = f"{summary}\n\nFull report: `{report.resolve()}` (also attached as an artifact).\n"
    optuna_dashboard.save_note(study, note)
    return artifact_id


def _bundle(root: Path, dest: Path, exclude: Path) -> Path:
    """Zip the report folder (Markdown, JSON, figures, plotly.min.js), leaving out the artifact store."""
    skip = exclude.resolve()
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and skip not in f.resolve().parents:
                z.write(f, f.relative_to(root).as_posix())
    return dest
