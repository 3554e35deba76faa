"""What changed in a study's training settings since it was stored: named keys, not two hashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archsearch.study.config import StudyConfig
from archsearch.train.config import FINGERPRINT_NEUTRAL, RUNTIME_KEYS


def _fingerprinted(train: dict[str, Any]) -> dict[str, Any]:
    """The training keys `StudyConfig.train_fingerprint` hashes (the seed and run-time knobs left out)."""
    out = {k: v for k, v in train.items() if k != "seed" and k not in RUNTIME_KEYS}
    for key, neutral in FINGERPRINT_NEUTRAL.items():
        out.setdefault(key, neutral)
    return out


def train_changes(stored_snapshot: Any, config: StudyConfig) -> list[str]:
    """["train.lr: 0.05 → 0.1", ...] between the study's stored config snapshot and `config`.

    The snapshot keeps the resolved training settings; when none of them changed the dataset did (its
    file name is in the fingerprint). [] when the study has no snapshot to compare with.
    """
    if not isinstance(stored_snapshot, dict) or not isinstance(stored_snapshot.get("train"), dict):
        return []
    before = _fingerprinted(stored_snapshot["train"])
    now = _fingerprinted(config.snapshot()["train"])
    changes = [f"train.{k}: {before.get(k)!r} → {now.get(k)!r}"
               for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
    if not changes:
        data = Path(config.data_path).name if config.data_path else None
        changes = [f"the dataset (now {data or config.train_config.dataset}; data: or ARCHSEARCH_DATA)"]
    return changes
