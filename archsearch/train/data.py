"""Datasets as uint8 tensors: decoded once to a disk cache, then split into training and validation.

Per-image PIL transforms cost more than a small CIFAR network's step on a fast device, so images are
decoded once (`archsearch.train.sources`) into a `uint8` N×C×H×W tensor cached under
`archsearch.cache.cache_dir()` (keyed by the source's content), moved to the training device whole, and
augmented there with batched index arithmetic (`archsearch.train.augment`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from archsearch.cache import cache_dir
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.train.safe_load import safe_load
from archsearch.train.sources import dataset_key, decode_torchvision, decode_tree, image_files, resolve_source

CACHE_VERSION = 1
CACHE_ENV = "ARCHSEARCH_CACHE"
CACHE_KEYS = frozenset({"train_x", "train_y", "test_x", "test_y", "classes", "mean", "std", "source", "version"})


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset: uint8 images N×C×H×W and int64 labels for the train and test splits."""

    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the 0–1 scale, over the train split
    std: tuple[float, ...]
    source: str
    from_cache: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _content_key(source: Path | tuple[str, Path], name: str) -> str:
    """A digest of the source's content: archive bytes, or a folder's file list with sizes and mtimes."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    if isinstance(source, tuple):
        h.update(f"torchvision:{name}".encode())
    elif source.is_file():
        with open(source, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    else:
        for file in sorted(image_files(source)):
            st = file.stat()
            h.update(f"{file.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the 0–1 scale, in float64 chunks (exact enough, little memory)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].to(torch.float64).div_(255)
        s += x.sum(dim=(0, 2, 3))
        s2 += x.square().sum(dim=(0, 2, 3))
    n = len(images) * images.shape[2] * images.shape[3]
    mean = s / n
    std = (s2 / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def load_dataset(
    dataset: str | os.PathLike = "cifar10", *, download: bool = True, progress: bool = True
) -> ImageData:
    """Load a dataset by name or path, decoding it only if no cache for its content exists yet."""
    source = resolve_source(dataset)
    if isinstance(source, tuple):
        name = str(dataset).lower().replace("-", "").replace("_", "")
    else:
        name = dataset_key(source.name) or re.sub(r"(\.tar\.gz|\.tgz|\.tar)$", "", source.name.lower())
    cache_file = cache_dir() / f"{name}-{_content_key(source, name)}.pt"
    blob = _read_cache(cache_file)
    from_cache = blob is not None
    if blob is None:
        if isinstance(source, tuple):
            blob = decode_torchvision(name, source[1], download)
        else:
            blob = decode_tree(source, progress)
        blob["mean"], blob["std"] = channel_stats(blob["train_x"])
        blob["source"] = str(source[1] if isinstance(source, tuple) else source)
        blob["version"] = CACHE_VERSION
        _write_cache(cache_file, blob)
    return ImageData(
        name=name,
        train_x=blob["train_x"],
        train_y=blob["train_y"],
        test_x=blob["test_x"],
        test_y=blob["test_y"],
        classes=tuple(blob["classes"]),
        mean=tuple(blob["mean"]),
        std=tuple(blob["std"]),
        source=blob["source"],
        from_cache=from_cache,
    )


def _read_cache(cache_file: Path) -> dict | None:
    """The cached decode, or None when there is none or it is damaged (it is only a cache: decode again)."""
    if not cache_file.exists():
        return None
    try:
        blob = safe_load(cache_file, "decoded-data cache file", mmap=True)
    except ArchsearchError as exc:
        if "permission denied" in str(exc):
            raise ArchsearchError(f"{cache_file}: cannot read the decoded-data cache (permission denied): "
                                  f"make it readable or point {CACHE_ENV} at another folder") from None
        blob = None
    if isinstance(blob, dict) and CACHE_KEYS <= blob.keys() and blob.get("version") == CACHE_VERSION:
        return blob
    print(f"archsearch: {cache_file}: damaged decoded-data cache, decoding the dataset again", file=sys.stderr)
    return None


def _write_cache(cache_file: Path, blob: dict) -> None:
    """Replace the cache atomically; an unwritable cache folder costs a decode next time, never the run."""
    tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, cache_file)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        print(f"archsearch: cannot write the decoded-data cache {cache_file.parent} ({exc.strerror}): using the "
              f"decoded data without caching it; point {CACHE_ENV} at a writable folder to skip decoding next time",
              file=sys.stderr)


def split_indices(
    n: int, val_size: int, *, seed: int = 0, subset: int | None = None
) -> tuple[Tensor, Tensor]:
    """Seeded (train, validation) index tensors carved from a train split of `n` images.

    The split depends only on `seed`, never on the training seed, so every trial of a study is
    judged on the same validation images; `subset` keeps the first images of the remaining order.
    """
    if not 0 <= val_size < n:
        raise ConfigError(f"val_size={val_size} must be ≥ 0 and below the {n} training images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = perm[:val_size], perm[val_size:]
    if subset is not None:
        if not 0 < subset <= len(train):
            raise ConfigError(f"subset={subset} must be in 1..{len(train)} (train images left after validation)")
        train = train[:subset]
    return train.sort().values, val.sort().values
