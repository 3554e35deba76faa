"""The round-trip check every export passes before it is reported.

The written module is imported under a private name, must import nothing but torch, must take
archsearch's state_dict with `strict=True` and must compute the same outputs.
"""

from __future__ import annotations

import ast
import importlib.util
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.arch.spec import ArchSpec
from archsearch.export.templates import ALLOWED_IMPORTS
from archsearch.export.weights import ExportError


def foreign_imports(source: str) -> list[str]:
    """Modules an exported file imports beyond torch (must be empty)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append(node.module or "")
            found += [f"{node.module}.{a.name}" for a in node.names if node.module == "torch" and a.name != "nn"]
    return [m for m in found if m not in ALLOWED_IMPORTS]


def load_module(path: str | Path) -> Any:
    """Import an exported file under a private name (not added to sys.modules)."""
    spec = importlib.util.spec_from_file_location(f"_archsearch_export_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise ExportError(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verify_export(path: str | Path, model: nn.Module, *, atol: float = 1e-5) -> None:
    """Round trip: the exported module takes `model`'s state_dict strictly and computes the same.

    Raises `ExportError` when imports, parameter count, state_dict names or eval outputs differ.
    """
    source = Path(path).read_text()
    bad = foreign_imports(source)
    if bad:
        raise ExportError(f"{path}: exported code imports {bad}; only {list(ALLOWED_IMPORTS)} are allowed")
    spec: ArchSpec = model.spec  # type: ignore[assignment]
    was_training = model.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        exported = load_module(path).build_model(spec.num_classes)
        x = torch.randn(2, 3, 32, 32)
    try:
        if list(exported.state_dict()) != list(model.state_dict()):
            raise ExportError(f"{path}: state_dict names differ from archsearch's {spec.name}")
        exported.load_state_dict(model.state_dict(), strict=True)
        ours = sum(p.numel() for p in exported.parameters())
        theirs = sum(p.numel() for p in model.parameters())
        if ours != theirs:
            raise ExportError(f"{path}: {ours} parameters, archsearch's {spec.name} has {theirs}")
        model.eval()
        exported.eval()
        with torch.no_grad(), warnings.catch_warnings():
            # torch's first forward-mode AD call scripts its JVP decompositions and warns about that
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            want, got = model(x), exported(x)
        if want.shape != got.shape or not torch.allclose(want, got, rtol=atol, atol=atol):
            diff = (want - got).abs().max().item() if want.shape == got.shape else float("nan")
            raise ExportError(f"{path}: outputs differ from archsearch's {spec.name} (max |diff| {diff:.3g})")
    finally:
        model.train(was_training)
