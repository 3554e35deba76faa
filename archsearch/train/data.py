"""Datasets as uint8 tensors: decode once to a disk cache, split, augment in batches on the device.

Per-image PIL transforms cost more than a small CIFAR network's step on a fast device, so images are
decoded once into a `uint8` N×C×H×W tensor cached under `$ARCHSEARCH_CACHE` (keyed by the source's
content), moved to the training device whole, and augmented there with batched index arithmetic.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from archsearch.errors import ConfigError

KNOWN_DATASETS = ("cifar10", "cifar100", "svhn")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TEST_SPLITS = ("test", "val", "valid", "validation")
CACHE_VERSION = 1


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


# ----------------------------------------------------------------------------- locating a dataset


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
            raise ConfigError(f"ARCHSEARCH_DATA={env}: no such file or folder")
        if _is_archive(env_path) or _is_tree(env_path):
            if dataset_key(env_path.name) in (None, name):
                return env_path
        elif env_path.is_dir():
            for entry in sorted(env_path.iterdir()):
                if dataset_key(entry.name) == name and (_is_archive(entry) or _is_tree(entry)):
                    return entry
            root = env_path
    return ("torchvision", root)


def cache_dir() -> Path:
    """`$ARCHSEARCH_CACHE`, default `~/.cache/archsearch`."""
    return Path(os.environ.get("ARCHSEARCH_CACHE") or "~/.cache/archsearch").expanduser()


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
        for file in sorted(_walk(source)):
            st = file.stat()
            h.update(f"{file.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(IMAGE_SUFFIXES):
                yield Path(dirpath) / f


# ----------------------------------------------------------------------------- decoding


def _read_items(source: Path, progress: bool) -> Iterator[tuple[str, str, bytes]]:
    """(split, class, encoded bytes) for each image under `<split>/<class>/` of an archive or folder."""
    from tqdm import tqdm

    if source.is_file():
        with tarfile.open(source, "r:*") as tf:
            for member in tqdm(tf, desc=f"reading {source.name}", unit=" files", disable=not progress):
                parts = member.name.split("/")
                if member.isfile() and len(parts) >= 3 and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                    fh = tf.extractfile(member)
                    if fh is not None:
                        yield parts[-3], parts[-2], fh.read()
    else:
        files = sorted(_walk(source))
        for file in tqdm(files, desc=f"reading {source.name}", unit=" files", disable=not progress):
            parts = file.relative_to(source).parts
            if len(parts) == 3:
                yield parts[0], parts[1], file.read_bytes()


def _decode_chunk(blobs: list[bytes]) -> list[Tensor]:
    from torchvision.io import ImageReadMode, decode_image

    out = []
    for blob in blobs:
        data = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
        try:
            out.append(decode_image(data, mode=ImageReadMode.RGB))
        except RuntimeError:  # formats libjpeg/libpng reject: let PIL try
            import numpy as np
            from PIL import Image

            img = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            out.append(torch.from_numpy(img.copy()).permute(2, 0, 1))
    return out


def decode_images(blobs: list[bytes], *, progress: bool = True, chunk: int = 1000) -> Tensor:
    """Decode encoded images into one uint8 N×3×H×W tensor (all images must share one size)."""
    from tqdm import tqdm

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


def _decode_tree(source: Path, progress: bool) -> dict:
    splits: dict[str, list[tuple[str, bytes]]] = {}
    for split, cls, blob in _read_items(source, progress):
        splits.setdefault(split, []).append((cls, blob))
    if "train" not in splits:
        raise ConfigError(f"{source}: no train/<class>/ images (found splits: {sorted(splits) or 'none'})")
    test_name = next((s for s in TEST_SPLITS if s in splits), None)
    classes = sorted({cls for cls, _ in splits["train"]})
    index = {c: i for i, c in enumerate(classes)}
    out: dict = {"classes": classes}
    for key, split in (("train", "train"), ("test", test_name)):
        items = splits.get(split, []) if split else []
        unknown = {cls for cls, _ in items} - index.keys()
        if unknown:
            raise ConfigError(f"{source}: {split} has classes not in train: {sorted(unknown)[:5]}")
        out[f"{key}_x"] = decode_images([b for _, b in items], progress=progress)
        out[f"{key}_y"] = torch.tensor([index[c] for c, _ in items], dtype=torch.int64)
    if out["test_x"].shape[1:] != out["train_x"].shape[1:] and len(out["test_x"]):
        raise ConfigError(f"{source}: train and {test_name} images differ in size")
    return out


def _decode_torchvision(name: str, root: Path, download: bool) -> dict:
    from torchvision import datasets

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
    from_cache = cache_file.exists()
    if from_cache:
        blob = torch.load(cache_file, map_location="cpu", weights_only=True, mmap=True)
    else:
        if isinstance(source, tuple):
            blob = _decode_torchvision(name, source[1], download)
        else:
            blob = _decode_tree(source, progress)
        blob["mean"], blob["std"] = channel_stats(blob["train_x"])
        blob["source"] = str(source[1] if isinstance(source, tuple) else source)
        blob["version"] = CACHE_VERSION
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        torch.save(blob, tmp)
        os.replace(tmp, cache_file)
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


# ----------------------------------------------------------------------------- splits


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


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's randomness, drawn up front: image order, crop offsets and flips (all on CPU)."""

    order: Tensor  # int64 [N]
    dy: Tensor  # int64 [N], crop offset in 0..2*pad
    dx: Tensor
    flip: Tensor  # bool [N]


def plan_epoch(n: int, generator: torch.Generator, *, pad: int = 4, augment: bool = True) -> EpochPlan:
    """Draw an epoch's order and augmentation from `generator` (CPU) so that runs replay exactly."""
    order = torch.randperm(n, generator=generator)
    if not augment:
        z = torch.full((n,), pad, dtype=torch.int64)
        return EpochPlan(order, z, z, torch.zeros(n, dtype=torch.bool))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return EpochPlan(order, dy, dx, flip)


def _crop_index(offset: Tensor, size: int, pad: int, padding: str) -> tuple[Tensor, Tensor | None]:
    """Source coordinates of a padded crop per image (B×size), and a validity mask for zero padding."""
    idx = offset[:, None] - pad + torch.arange(size, device=offset.device)
    if padding == "reflect":
        idx = idx.abs()
        idx = torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)
        return idx, None
    valid = (idx >= 0) & (idx < size)
    return idx.clamp(0, size - 1), valid


def crop_flip(
    images: Tensor,
    index: Tensor,
    dy: Tensor,
    dx: Tensor,
    flip: Tensor,
    *,
    pad: int = 4,
    padding: str = "zero",
) -> Tensor:
    """Gather `images[index]` with a pad-`pad` random crop and horizontal flip, as index arithmetic.

    Equivalent to padding every image (zeros, or `reflect`), cutting an H×W window at (dy, dx) and
    flipping it where `flip` is set, without building the padded copy: two gathers and a mask.
    """
    if padding not in ("zero", "reflect"):
        raise ConfigError(f"padding={padding!r}: expected 'zero' or 'reflect'")
    batch = images[index]
    b, c, h, w = batch.shape
    rows, row_ok = _crop_index(dy, h, pad, padding)
    cols, col_ok = _crop_index(dx, w, pad, padding)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    out = torch.gather(batch, 2, rows[:, None, :, None].expand(b, c, h, w))
    out = torch.gather(out, 3, cols[:, None, None, :].expand(b, c, h, w))
    if row_ok is not None and col_ok is not None:
        col_ok = torch.where(flip[:, None], col_ok.flip(1), col_ok)
        out = out * (row_ok[:, None, :, None] & col_ok[:, None, None, :])
    return out


class Normalizer:
    """uint8 → float with per-channel normalisation, in the training memory format and dtype."""

    def __init__(
        self,
        mean: Iterable[float],
        std: Iterable[float],
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        std_t = torch.tensor(list(std), dtype=torch.float32, device=device)
        mean_t = torch.tensor(list(mean), dtype=torch.float32, device=device)
        # (x/255 - mean) / std == x * scale + shift
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def __call__(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.addcmul(self.shift, x.float(), self.scale)
