"""Where a dataset's images come from (an archive, an image folder, a torchvision download) and decoding them.

Archives and folders hold `<split>/<class>/<image>`; every image of a dataset must share one size.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from archsearch.cache import cache_dir
from archsearch.errors import ConfigError

KNOWN_DATASETS = ("cifar10", "cifar100", "svhn")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TEST_SPLITS = ("test", "val", "valid", "validation")


def dataset_key(text: str) -> str | None:
    """The known dataset a file or folder name refers to (`cifar10-jpg.tar.gz` → cifar10), if any."""
    norm = re.sub(r"[^a-z0-9]", "", text.lower())
    for key in sorted(KNOWN_DATASETS, key=len, reverse=True):  # cifar100 before cifar10
        if norm.startswith(key):
            return key
    return None


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _is_tree(path: Path) -> bool:
    return path.is_dir() and (path / "train").is_dir()


def resolve_source(dataset: str | os.PathLike = "cifar10") -> Path | tuple[str, Path]:
    """Where `dataset` comes from: an archive/folder path, or ("torchvision", download root).

    Order: an existing path as given; else `ARCHSEARCH_DATA` naming an archive/folder for this dataset
    or a root holding one named after it; else a torchvision download (into that root, or the cache).
    """
    path = Path(dataset).expanduser()
    if path.exists():
        if _is_archive(path) or _is_tree(path):
            return path
        raise ConfigError(f"{path}: not a .tar.gz/.tar archive or a folder with train/<class>/ images")
    name = str(dataset).lower().replace("-", "").replace("_", "")
    if name not in KNOWN_DATASETS:
        raise ConfigError(
            f"unknown dataset {str(dataset)!r}: expected one of {', '.join(KNOWN_DATASETS)} "
            "or a path to an image folder / .tar.gz"
        )
    env = os.environ.get("ARCHSEARCH_DATA")
    root = cache_dir() / "downloads"
    if env:
        env_path = Path(env).expanduser()
        if not env_path.exists():
            raise ConfigError(f"ARCHSEARCH_DATA={env}: no such file or folder (set ARCHSEARCH_DATA to the dataset "
                              "archive or folder, or unset it)")
        if _is_archive(env_path) or _is_tree(env_path):
            if dataset_key(env_path.name) in (None, name):
                return env_path
        elif env_path.is_dir():
            for entry in sorted(env_path.iterdir()):
                if dataset_key(entry.name) == name and (_is_archive(entry) or _is_tree(entry)):
                    return entry
            root = env_path
    return ("torchvision", root)


def image_files(root: Path) -> Iterator[Path]:
    """Every image file below `root` (by suffix), in `os.walk` order."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath) / f


def _read_items(source: Path, progress: bool) -> Iterator[tuple[str, str, str, bytes]]:
    """(split, class, path inside the source, encoded bytes) for each image under `<split>/<class>/`."""
    if source.is_file():
        with tarfile.open(source, "r:*") as tf:
            for member in tqdm(tf, desc=f"reading {source.name}", unit=" files", disable=not progress):
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    fh = tf.extractfile(member)
                    if fh is not None:
                        yield parts[-3], parts[-2], member.name, fh.read()
    else:
        files = sorted(image_files(source))
        for file in tqdm(files, desc=f"reading {source.name}", unit=" files", disable=not progress):
            parts = file.relative_to(source).parts
            if len(parts) == 3:
                yield parts[0], parts[1], "/".join(parts), file.read_bytes()


class ImageDecodeError(ConfigError):
    """An image in a dataset that no decoder reads; the message names its path inside the archive/folder."""


def _decode_chunk(items: list[tuple[str, bytes]]) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_image  # lazy: ~3 s to import, needed only without a cache

    out = []
    for name, blob in items:
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        try:
            out.append(decode_image(data, mode=ImageReadMode.RGB))
        except RuntimeError:  # formats libjpeg/libpng reject: let PIL try
            try:
                img = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                reason = str(exc).split(" <_io.", 1)[0].strip().rstrip(":") or type(exc).__name__
                raise ImageDecodeError(f"{name}: damaged or not an image ({reason})") from None
            out.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
    return out


def decode_images(blobs: list[tuple[str, bytes]], *, progress: bool = True, chunk: int = 1000) -> Tensor:
    """Decode (name, encoded image) pairs into one uint8 N×3×H×W tensor (all images must share one size)."""
    if not blobs:
        return torch.empty(0, 3, 32, 32, dtype=torch.uint8)
    chunks = [blobs[i : i + chunk] for i in range(0, len(blobs), chunk)]
    images: list[Tensor] = []
    # decode_image releases the GIL, so two threads use both cores.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, tqdm(
        total=len(blobs), desc="decoding", unit=" img", disable=not progress
    ) as bar:
        for decoded in pool.map(_decode_chunk, chunks):
            images.extend(decoded)
            bar.update(len(decoded))
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) != 1:
        raise ConfigError(f"images differ in size ({sorted(shapes)[:3]} ...): resize them to one size first")
    return torch.stack(images)


def decode_tree(source: Path, progress: bool) -> dict:
    """Decode an archive or folder: {train_x, train_y, test_x, test_y, classes}, classes sorted by name."""
    splits: dict[str, list[tuple[str, str, bytes]]] = {}
    for split, cls, name, blob in _read_items(source, progress):
        splits.setdefault(split, []).append((cls, name, blob))
    if "train" not in splits:
        raise ConfigError(f"{source}: no train/<class>/ images (found splits: {sorted(splits) or 'none'})")
    test_name = next((s for s in TEST_SPLITS if s in splits), None)
    classes = sorted({cls for cls, _, _ in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out: dict = {"classes": classes}
    for key, split in (("train", "train"), ("test", test_name)):
        items = splits.get(split, []) if split else []
        unknown = {cls for cls, _, _ in items} - index.keys()
        if unknown:
            raise ConfigError(f"{source}: {split} has classes not in train: {sorted(unknown)[:5]}")
        try:
            out[f"{key}_x"] = decode_images([(n, b) for _, n, b in items], progress=progress)
        except ImageDecodeError as exc:
            raise ImageDecodeError(f"{source}: {exc}") from None
        out[f"{key}_y"] = torch.tensor([index[c] for c, _, _ in items], dtype=torch.int64)
    if out["test_x"].shape[1:] != out["train_x"].shape[1:] and len(out["test_x"]):
        raise ConfigError(f"{source}: train and {test_name} images differ in size")
    return out


def decode_torchvision(name: str, root: Path, download: bool) -> dict:
    """CIFAR-10/100 or SVHN through torchvision (downloaded into `root` when `download`), as `decode_tree` gives."""
    from torchvision import datasets  # lazy: ~3 s to import, needed only without a cache

    root.mkdir(parents=True, exist_ok=True)
    out: dict = {}
    try:
        for split, train in (("train", True), ("test", False)):
            if name == "svhn":
                ds = datasets.SVHN(str(root), split=split, download=download)
                out[f"{split}_x"] = torch.from_numpy(ds.data).contiguous()  # already N×C×H×W
                out[f"{split}_y"] = torch.as_tensor(ds.labels, dtype=torch.int64)
                out["classes"] = [str(i) for i in range(10)]
            else:
                cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
                ds = cls(str(root), train=train, download=download)
                out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
                out[f"{split}_y"] = torch.as_tensor(ds.targets, dtype=torch.int64)
                out["classes"] = list(ds.classes)
    except (RuntimeError, OSError) as exc:  # "Dataset not found or corrupted", or no network
        raise ConfigError(f"{name}: {exc} (set ARCHSEARCH_DATA or pass a path)") from None
    return out
