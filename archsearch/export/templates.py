"""Source templates for `archsearch export`: one generator per block (WarpNet's in `warp_templates`).

The exported file is plain PyTorch and must load archsearch's `state_dict` with `strict=True`, so
every block here mirrors one archsearch module (named in its comment) attribute for attribute and
layer index for layer index. Constants of the spec (kernels, dropout, k/K, shortcut kind, widths,
units) are baked into the text: the exported file holds no interpreter of specs, only the blocks its
network uses, laid out stage by stage (`archsearch.export.source` composes them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from archsearch.arch.plan import function_layout
from archsearch.arch.spec import ArchSpec

ALLOWED_IMPORTS = ("torch", "torch.nn", "torch.nn.functional", "torch.autograd.forward_ad")


def module_name(name: str) -> str:
    """A Python module name for an architecture name (`wrn-10-2-drop0.3` -> `wrn_10_2_drop0_3`)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return ident if ident[:1].isalpha() else f"net_{ident}"


# ------------------------------------------------------------------------------- helpers
def block(text: str) -> str:
    """Strip the template's leading newline; templates are written flush-left."""
    return text.lstrip("\n")


def indent(lines: list[str], spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else "" for line in lines)


def expanded_width(spec: ArchSpec) -> str:
    return "4 * width" if spec.function == "bottleneck" else "width"


def _function_convs(spec: ArchSpec, first_in: str, width: str) -> list[tuple[int, str, str, str]]:
    """(kernel, in, out, stride expression) of the function's convolutions, from the layer plan."""
    names = {"in": first_in, "width": width, "expanded": f"4 * {width}"}
    return [(slot.kernel, names[slot.reads], names[slot.writes], "stride" if slot.strided else "")
            for slot in function_layout(spec.kernels, spec.function == "bottleneck")]


def _conv_call(kernel: int, cin: str, cout: str, stride: str) -> str:
    return f"conv({cin}, {cout}, {kernel}{', ' + stride if stride else ''}),"


def describe(parts: list[str]) -> str:
    return "-".join(parts)


# ------------------------------------------------------------------------------- common blocks
def conv_helper() -> str:
    return block('''
def conv(in_c: int, out_c: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A convolution without bias, padded to keep the spatial size (before striding)."""
    return nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=kernel // 2, bias=False)
''')


def init_helper() -> str:
    # mirrors archsearch.nn.build.init_weights
    return block('''
def init_weights(model: nn.Module) -> None:
    """He (Kaiming normal, fan_out) convolutions, BN gamma = 1 / beta = 0, as in the papers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1 / torch.tensor(float(m.in_features), dtype=torch.float64).sqrt().item()
            nn.init.uniform_(m.weight, -bound, bound)  # bound = 1/sqrt(fan_in), correctly rounded
            nn.init.zeros_(m.bias)
''')


def pad_shortcut() -> str:
    # mirrors archsearch.nn.blocks.PadShortcut (no parameters, so no state_dict entries)
    return block('''
class PadShortcut(nn.Module):
    """Option A shortcut: stride-2 subsampling and zero-padded channels, no parameters."""

    def __init__(self, in_c: int, out_c: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_c - in_c, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x
''')


def shortcut_helper(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.make_shortcut for this spec's kind (pre: no BN; post: with BN)
    if spec.shortcut == "pad":
        doc, body = "option A (PadShortcut)", "return PadShortcut(in_c, out_c, stride)"
    elif spec.unit == "pre":
        doc, body = "a 1x1 projection", "return nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False)"
    else:
        doc = "a 1x1 projection with BN"
        body = ("return nn.Sequential(\n        nn.Conv2d(in_c, out_c, 1, stride=stride, bias=False), "
                "nn.BatchNorm2d(out_c)\n    )")
    return block(f'''
def shortcut(in_c: int, out_c: int, stride: int) -> nn.Module:
    """Identity, or {doc} where the unit changes shape."""
    if in_c == out_c and stride == 1:
        return nn.Identity()
    {body}
''')


def functions_class(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.branches.BranchSet (the `branches` ModuleList); run as a plain loop
    methods = []
    if spec.combine == "sum":
        methods.append('''
    def sum_shared(self, x: torch.Tensor) -> torch.Tensor:
        """sum_i f_i(x): every function reads the same input."""
        out = self.branches[0](x)
        for f in self.branches[1:]:
            out = out + f(x)
        return out
''')
    else:
        methods.append('''
    def each(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """[f_i(x_i)]: function i reads stream i."""
        return [f(xs[i]) for i, f in enumerate(self.branches)]
''')
    return block('''
class Functions(nn.Module):
    """The unit's parallel residual functions, named `branches` as in archsearch's state_dict."""

    def __init__(self, functions: list[nn.Sequential]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(functions)
''') + "".join(methods)


# ------------------------------------------------------------------------------- residual functions
def preact_function(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.preact_function
    drop = spec.dropout
    lines: list[str] = []
    parts: list[str] = ["[BN-ReLU]"]
    for i, (k, cin, cout, stride) in enumerate(_function_convs(spec, "in_c", "width")):
        if i > 0:
            lines += [f"nn.BatchNorm2d({cin}),", "nn.ReLU(),"] + ([f"nn.Dropout({drop!r}),"] if drop else [])
            parts += ["BN", "ReLU"] + (["dropout"] if drop else [])
        lines.append(_conv_call(k, cin, cout, stride))
        parts.append(f"conv{k}x{k}")
    return block(f'''
def residual_function(in_c: int, width: int, stride: int, owns_preact: bool) -> nn.Sequential:
    """{describe(parts)}.

    In the first unit of a stage the leading BN-ReLU belongs to the unit (shared by the shortcut
    and all functions), so the function starts at its first convolution (`owns_preact=False`).
    """
    layers: list[nn.Module] = []
    if owns_preact:
        layers += [nn.BatchNorm2d(in_c), nn.ReLU()]
    layers += [
{indent(lines, 8)}
    ]
    return nn.Sequential(*layers)
''')


def post_function(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.post_function
    drop = spec.dropout
    lines: list[str] = []
    parts: list[str] = []
    for i, (k, cin, cout, stride) in enumerate(_function_convs(spec, "in_c", "width")):
        if i > 0:
            lines += ["nn.ReLU(),"] + ([f"nn.Dropout({drop!r}),"] if drop else [])
            parts += ["ReLU"] + (["dropout"] if drop else [])
        lines += [_conv_call(k, cin, cout, stride), f"nn.BatchNorm2d({cout}),"]
        parts += [f"conv{k}x{k}", "BN"]
    return block(f'''
def residual_function(in_c: int, width: int, stride: int) -> nn.Sequential:
    """The branch H: {describe(parts)}."""
    return nn.Sequential(
{indent(lines, 8)}
    )
''')


# ------------------------------------------------------------------------------- units
def preact_unit(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.PreActUnit
    k = spec.branches
    what = "f(a)" if k == 1 else f"f_1(a) + ... + f_{k}(a)"
    call = "residual_function(in_c, width, stride, owns_preact=not first)"
    functions = f"[{call}]" if k == 1 else f"\n            [{call} for _ in range({k})]\n        "
    return block(f'''
class PreActUnit(nn.Module):
    """y = Z(a) + {what}.

    a = BN-ReLU(x) in a stage's first unit (shared by the shortcut and all functions), else a = x.
    """

    def __init__(self, in_c: int, width: int, stride: int = 1, first: bool = False) -> None:
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(in_c), nn.ReLU()) if first else None
        self.shortcut = shortcut(in_c, {expanded_width(spec)}, stride)
        self.functions = Functions({functions})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x if self.preact is None else self.preact(x)
        return self.shortcut(a) + self.functions.sum_shared(a)
''')


def post_sum_unit(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.PostSumUnit
    k = spec.branches
    what = "H(x)" if k == 1 else f"H_1(x) + ... + H_{k}(x)"
    call = "residual_function(in_c, width, stride)"
    functions = f"[{call}]" if k == 1 else f"[{call} for _ in range({k})]"
    return block(f'''
class PostUnit(nn.Module):
    """y = ReLU(Z(x) + {what})."""

    def __init__(self, in_c: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut = shortcut(in_c, {expanded_width(spec)}, stride)
        self.functions = Functions({functions})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.functions.sum_shared(x))
''')


def merge_run_unit(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.MergeRunUnit
    k = spec.branches
    return block(f'''
class MergeRunUnit(nn.Module):
    """Merge-and-run on {k} streams: f = mean_j Z_j(x_j), y_i = ReLU(f + H_i(x_i)).

    Each stream owns its shortcut Z_j. The network's last unit returns the single stream
    ReLU(f + sum_i H_i(x_i)).
    """

    def __init__(self, in_c: int, width: int, stride: int = 1, last: bool = False) -> None:
        super().__init__()
        self.shortcuts = nn.ModuleList([shortcut(in_c, {expanded_width(spec)}, stride) for _ in range({k})])
        self.functions = Functions([residual_function(in_c, width, stride) for _ in range({k})])
        self.last = last

    def forward(self, streams: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        merged = self.shortcuts[0](streams[0])
        for j in range(1, {k}):
            merged = merged + self.shortcuts[j](streams[j])
        merged = merged / {k}
        outs = self.functions.each(streams)
        if self.last:
            total = outs[0]
            for h in outs[1:]:
                total = total + h
            return F.relu(merged + total)
        return [F.relu(merged + h) for h in outs]
''')


class UnitTemplate(NamedTuple):
    """How the exporter writes one (unit kind, combine) pair: the class's source, its name, and the
    `plan.Unit` flag ("first" or "last") passed as a keyword where it is true."""

    source: Callable[[ArchSpec], str]
    class_name: str
    flag: str = ""


UNIT_TEMPLATES: dict[tuple[str, str], UnitTemplate] = {
    ("pre", "sum"): UnitTemplate(preact_unit, "PreActUnit", "first"),
    ("post", "sum"): UnitTemplate(post_sum_unit, "PostUnit"),
    ("post", "merge"): UnitTemplate(merge_run_unit, "MergeRunUnit", "last"),
}
"""Mirrors `archsearch.nn.build.UNIT_CLASSES`; a family with a new unit registers its template here."""
