"""Files a user hands in (weights, checkpoints, the decoded-data cache) never run code and fail in one line."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from archsearch.cli import main
from archsearch.errors import ArchsearchError
from archsearch.orchestrate.prepare import prewarm_data
from archsearch.study.config import load_study
from archsearch.train import data as D
from archsearch.train.checkpoint import load_checkpoint, load_checkpoint_metrics
from archsearch.train.sources import ImageDecodeError


class _RunsCode:
    """Unpickling this runs `touch MARKER` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_file(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"model": _RunsCode(marker)}, f)
    return path


def write_tree(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    for split in ("train", "test"):
        for c, cls in enumerate(("ant", "zebra")):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (60 * c + i, 100, 200)).save(d / f"{i}.png")
    return root


def one_line_error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "weights_only" not in err and "Traceback" not in err, err
    return err


TRAIN_ARGS = ["--epochs", "1", "--val-size", "2", "--batch-size", "2", "--threads", "1", "--json"]


def test_export_weights_that_would_run_code(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "MARKER"
    evil = evil_file(tmp_path / "evil.pt", marker)
    assert main(["export", "resnet-8", "--weights", str(evil), "--out", str(tmp_path / "exp")]) == 2
    err = one_line_error(capsys)
    assert f"{evil}: not an archsearch weights/checkpoint file" in err and "nothing in it was run" in err
    assert not marker.exists() and not (tmp_path / "exp").exists()


def test_train_resume_checkpoint_that_would_run_code(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "MARKER"
    evil = evil_file(tmp_path / "out" / "checkpoint.pt", marker)
    before = evil.read_bytes()
    tree = write_tree(tmp_path / "toy")
    assert main(["train", "resnet-8", "--data", str(tree), "--out", str(tmp_path / "out"), *TRAIN_ARGS]) == 2
    assert f"{evil}: not an archsearch checkpoint file" in one_line_error(capsys)
    assert not marker.exists() and evil.read_bytes() == before  # nothing run, nothing overwritten


def test_run_resume_checkpoints_never_run_code(tmp_path: Path) -> None:
    """`run --resume` reads trial checkpoints through load_checkpoint(_metrics)."""
    marker = tmp_path / "MARKER"
    evil = evil_file(tmp_path / "trial" / "checkpoint.pt", marker)
    for load in (load_checkpoint, load_checkpoint_metrics):
        with pytest.raises(ArchsearchError, match="not an archsearch checkpoint file") as err:
            load(evil.parent)
        assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    torch.save({"just": torch.zeros(1)}, tmp_path / "other.pt")  # a torch file, but no checkpoint
    with pytest.raises(ArchsearchError, match="no training history in it"):
        load_checkpoint(tmp_path / "other.pt")
    assert not marker.exists()


def _cache_file(tree: Path) -> Path:
    [cache] = [p for p in D.cache_dir().glob("toy-*.pt")]
    return cache


def test_damaged_or_code_carrying_cache_is_rebuilt(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path / "cache"))
    tree = write_tree(tmp_path / "toy")
    first = D.load_dataset(tree, progress=False)
    cache = _cache_file(tree)
    marker = tmp_path / "MARKER"
    for damage in (lambda: cache.write_bytes(cache.read_bytes()[:200]),  # truncated
                   lambda: cache.write_bytes(b"\x00garbage"),
                   lambda: evil_file(cache, marker)):
        damage()
        again = D.load_dataset(tree, progress=False)
        assert not again.from_cache and torch.equal(again.train_x, first.train_x)
        assert "damaged decoded-data cache, decoding the dataset again" in capsys.readouterr().err
        assert D.load_dataset(tree, progress=False).from_cache  # rebuilt in place
    assert not marker.exists()
    cache.write_bytes(b"\x00garbage")  # the command: trains, exit 0
    assert main(["train", "resnet-8", "--data", str(tree), *TRAIN_ARGS]) == 0
    assert D.load_dataset(tree, progress=False).from_cache


def test_read_only_cache(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path / "cache"))
    tree = write_tree(tmp_path / "toy")
    D.load_dataset(tree, progress=False)
    cache = _cache_file(tree)
    cache.chmod(0o444)
    cache.parent.chmod(0o555)
    try:  # intact: used as it is, nothing written
        monkeypatch.setattr(D, "_write_cache", lambda *a: pytest.fail("wrote to a read-only cache"))
        assert D.load_dataset(tree, progress=False).from_cache
    finally:
        cache.parent.chmod(0o755)
    monkeypatch.undo()
    # unwritable (a file in the way: also true for root): decode, train, one warning line, exit 0
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(blocker / "cache"))
    assert main(["train", "resnet-8", "--data", str(tree), *TRAIN_ARGS]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "decoded-data cache" in line]
    assert len(warnings) == 1 and f"cannot write the decoded-data cache {blocker / 'cache'}" in warnings[0]
    assert "ARCHSEARCH_CACHE" in warnings[0]


def test_corrupt_image_is_named_by_its_path_in_the_archive(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ARCHSEARCH_CACHE", str(tmp_path / "cache"))
    tree = write_tree(tmp_path / "toy")
    (tree / "train" / "zebra" / "bad.png").write_bytes(b"\x89PNG not really")
    archive = tmp_path / "toy.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tree, arcname="toy")
    with pytest.raises(ImageDecodeError) as err:
        D.load_dataset(archive, progress=False)
    assert str(err.value).startswith(f"{archive}: toy/train/zebra/bad.png: damaged or not an image")
    assert "_io" not in str(err.value)
    assert main(["train", "resnet-8", "--data", str(archive), *TRAIN_ARGS]) == 2
    assert "toy/train/zebra/bad.png: damaged or not an image" in one_line_error(capsys)


def test_missing_archsearch_data_is_blamed_on_the_variable(tmp_path: Path, monkeypatch) -> None:
    study = tmp_path / "s.yaml"
    study.write_text("name: s\nspace: {candidates: [{name: resnet-8}]}\nn_trials: 1\ndata: null\n"
                     "train: {epochs: 1, val_size: 2}\n")
    monkeypatch.setenv("ARCHSEARCH_DATA", str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(ArchsearchError) as err:
        prewarm_data(load_study(study))
    assert str(err.value) == (f"{study}: ARCHSEARCH_DATA={tmp_path / 'nowhere.tar.gz'}: no such file or folder "
                              "(the study's data: is null, so trials read ARCHSEARCH_DATA: set it to the dataset "
                              "archive or folder)")
