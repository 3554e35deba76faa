"""Data: decode-once cache on real CIFAR-10, source resolution, splits, batched augmentation."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from archsearch.errors import ConfigError
from archsearch.train import augment as A
from archsearch.train import data as D
from archsearch.train import sources as S


def test_cifar10_decoded(cifar10):
    assert cifar10.name == "cifar10"
    assert cifar10.train_x.shape == (50000, 3, 32, 32) and cifar10.train_x.dtype == torch.uint8
    assert cifar10.test_x.shape == (10000, 3, 32, 32)
    assert cifar10.classes[:3] == ("airplane", "automobile", "bird") and cifar10.num_classes == 10
    assert torch.bincount(cifar10.train_y).tolist() == [5000] * 10
    assert torch.bincount(cifar10.test_y).tolist() == [1000] * 10
    # the well-known CIFAR-10 channel statistics (JPEG re-encoding moves them in the 3rd decimal)
    assert cifar10.mean == pytest.approx((0.491, 0.482, 0.447), abs=5e-3)
    assert cifar10.std == pytest.approx((0.247, 0.243, 0.261), abs=5e-3)


def test_second_load_uses_cache(cifar10, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although a cache exists")

    monkeypatch.setattr(S, "decode_images", no_decoding)
    monkeypatch.setenv("ARCHSEARCH_DATA", cifar10.source)
    again = D.load_dataset("cifar10", progress=False)
    assert again.from_cache
    assert torch.equal(again.train_x[:1000], cifar10.train_x[:1000])
    assert torch.equal(again.test_y, cifar10.test_y)


def _write_tree(root, size=(8, 8), per_class=3):
    from PIL import Image

    for split in ("train", "test"):
        for c, cls in enumerate(("zebra", "ant")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                img = Image.new("RGB", size, (40 * c + i, 100, 200))
                img.save(d / f"{i}.png")


def test_image_folder_and_content_key(tmp_path):
    tree = tmp_path / "toy"
    _write_tree(tree)
    data = D.load_dataset(tree, progress=False)
    assert not data.from_cache and data.classes == ("ant", "zebra")
    assert data.train_x.shape == (6, 3, 8, 8) and data.test_x.shape == (6, 3, 8, 8)
    assert data.train_x[data.train_y == 1][0, :, 0, 0].tolist() == [0, 100, 200]  # zebra image 0, lossless
    assert D.load_dataset(tree, progress=False).from_cache
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tree / "train" / "ant" / "0.png")  # content changed
    os.utime(tree / "train" / "ant" / "0.png", ns=(1, 1))
    changed = D.load_dataset(tree, progress=False)
    assert not changed.from_cache and changed.train_x[changed.train_y == 0][0, :, 0, 0].tolist() == [1, 2, 3]


def test_mixed_sizes_rejected(tmp_path):
    _write_tree(tmp_path / "t")
    from PIL import Image

    Image.new("RGB", (9, 8)).save(tmp_path / "t" / "train" / "ant" / "odd.png")
    with pytest.raises(ConfigError, match="differ in size"):
        D.load_dataset(tmp_path / "t", progress=False)


def test_resolve_source(tmp_path, monkeypatch):
    archive = tmp_path / "cifar10-jpg.tar.gz"
    archive.write_bytes(b"")
    monkeypatch.setenv("ARCHSEARCH_DATA", str(archive))
    assert S.resolve_source("cifar10") == archive
    assert S.resolve_source("cifar100")[0] == "torchvision"  # the archive names another dataset
    monkeypatch.setenv("ARCHSEARCH_DATA", str(tmp_path))  # a data root
    assert S.resolve_source("CIFAR-10") == archive
    assert S.resolve_source("svhn") == ("torchvision", tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset"):
        S.resolve_source("mnist")
    monkeypatch.setenv("ARCHSEARCH_DATA", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="ARCHSEARCH_DATA"):
        S.resolve_source("cifar10")
    assert S.dataset_key("cifar100-png") == "cifar100" and S.dataset_key("my-set") is None


def test_split_indices():
    tr, va = D.split_indices(1000, 100, seed=3)
    assert len(tr) == 900 and len(va) == 100
    assert len(set(tr.tolist()) | set(va.tolist())) == 1000
    tr2, va2 = D.split_indices(1000, 100, seed=3, subset=50)
    assert torch.equal(va, va2) and set(tr2.tolist()) <= set(tr.tolist()) and len(tr2) == 50
    assert not torch.equal(D.split_indices(1000, 100, seed=4)[1], va)
    with pytest.raises(ConfigError):
        D.split_indices(1000, 100, subset=901)


def _reference(images, index, dy, dx, flip, pad, padding):
    """The textbook way: pad each image, slice the window, flip."""
    mode = "constant" if padding == "zero" else "reflect"
    out = []
    for i, n in enumerate(index.tolist()):
        p = F.pad(images[n : n + 1].float(), (pad,) * 4, mode=mode)[0]
        crop = p[:, dy[i] : dy[i] + images.shape[2], dx[i] : dx[i] + images.shape[3]]
        out.append(crop.flip(2) if flip[i] else crop)
    return torch.stack(out).to(torch.uint8)


@pytest.mark.parametrize("padding", ["zero", "reflect"])
def test_crop_flip_matches_reference(padding):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 12, 10), dtype=torch.uint8, generator=g)
    plan = A.plan_epoch(20, g, pad=4)
    idx = plan.order[:16]
    dy, dx, flip = plan.dy[:16], plan.dx[:16], plan.flip[:16]
    assert flip.any() and not flip.all() and dy.min() >= 0 and dy.max() <= 8
    out = A.crop_flip(images, idx, dy, dx, flip, pad=4, padding=padding)
    assert out.shape == (16, 3, 12, 10) and out.dtype == torch.uint8
    assert torch.equal(out, _reference(images, idx, dy, dx, flip, 4, padding))


def test_crop_flip_identity_and_flip():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    idx = torch.tensor([1, 0])
    centre = torch.tensor([4, 4])
    same = A.crop_flip(images, idx, centre, centre, torch.tensor([False, False]))
    assert torch.equal(same, images[idx])
    flipped = A.crop_flip(images, idx, centre, centre, torch.tensor([True, False]))
    assert torch.equal(flipped[0], images[1].flip(2)) and torch.equal(flipped[1], images[0])
    shifted = A.crop_flip(images, idx, torch.tensor([5, 4]), centre, torch.tensor([False, False]))
    assert torch.equal(shifted[0, :, :3], images[1, :, 1:]) and shifted[0, :, 3].eq(0).all()


def test_plan_epoch_replays():
    a = A.plan_epoch(100, torch.Generator().manual_seed(7))
    b = A.plan_epoch(100, torch.Generator().manual_seed(7))
    assert torch.equal(a.order, b.order) and torch.equal(a.dx, b.dx) and torch.equal(a.flip, b.flip)
    assert sorted(a.order.tolist()) == list(range(100))
    plain = A.plan_epoch(10, torch.Generator(), augment=False)
    assert plain.dy.eq(4).all() and not plain.flip.any()


def test_normalizer(cifar10):
    norm = A.Normalizer(cifar10.mean, cifar10.std, torch.device("cpu"), channels_last=True)
    x = norm(cifar10.train_x[::10])  # strided: the archive stores the images class by class
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    mean, std = D.channel_stats(cifar10.train_x[:500])
    ref = cifar10.train_x[:500].double() / 255
    assert mean == pytest.approx(ref.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(ref.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-9)
