"""Source templates for `archsearch export`: one generator per block, composed from the spec.

The exported file is plain PyTorch and must load archsearch's `state_dict` with `strict=True`, so
every block here mirrors one archsearch module (named in its comment) attribute for attribute and
layer index for layer index. Constants of the spec (kernels, dropout, k/K, shortcut kind, widths,
units) are baked into the text: the exported file holds no interpreter of specs, only the blocks its
network uses, laid out stage by stage.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from archsearch.arch.families import family
from archsearch.arch.plan import Unit, derivative_terms, function_layout, units, warp_stages
from archsearch.arch.spec import ArchSpec

ALLOWED_IMPORTS = ("torch", "torch.nn", "torch.nn.functional", "torch.autograd.forward_ad")


def module_name(name: str) -> str:
    """A Python module name for an architecture name (`wrn-10-2-drop0.3` -> `wrn_10_2_drop0_3`)."""
    ident = re.sub(r"[^0-9A-Za-z_]", "_", name)
    return ident if ident[:1].isalpha() else f"net_{ident}"


# ------------------------------------------------------------------------------- helpers
def _block(text: str) -> str:
    """Strip the template's leading newline; templates are written flush-left."""
    return text.lstrip("\n")


def _indent(lines: list[str], spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else "" for line in lines)


def _expanded(spec: ArchSpec) -> str:
    return "4 * width" if spec.function == "bottleneck" else "width"


def _conv_plan(spec: ArchSpec, first_in: str, width: str) -> list[tuple[int, str, str, str]]:
    """(kernel, in, out, stride expression) of the function's convolutions, from the layer plan."""
    names = {"in": first_in, "width": width, "expanded": f"4 * {width}"}
    return [(slot.kernel, names[slot.reads], names[slot.writes], "stride" if slot.strided else "")
            for slot in function_layout(spec.kernels, spec.function == "bottleneck")]


def _conv_call(kernel: int, cin: str, cout: str, stride: str) -> str:
    return f"conv({cin}, {cout}, {kernel}{', ' + stride if stride else ''}),"


def _describe(parts: list[str]) -> str:
    return "-".join(parts)


# ------------------------------------------------------------------------------- common blocks
def conv_helper() -> str:
    return _block('''
def conv(in_c: int, out_c: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A convolution without bias, padded to keep the spatial size (before striding)."""
    return nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=kernel // 2, bias=False)
''')


def init_helper() -> str:
    # mirrors archsearch.nn.build.init_weights
    return _block('''
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
    return _block('''
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
    return _block(f'''
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
    return _block('''
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
    for i, (k, cin, cout, stride) in enumerate(_conv_plan(spec, "in_c", "width")):
        if i > 0:
            lines += [f"nn.BatchNorm2d({cin}),", "nn.ReLU(),"] + ([f"nn.Dropout({drop!r}),"] if drop else [])
            parts += ["BN", "ReLU"] + (["dropout"] if drop else [])
        lines.append(_conv_call(k, cin, cout, stride))
        parts.append(f"conv{k}x{k}")
    return _block(f'''
def residual_function(in_c: int, width: int, stride: int, owns_preact: bool) -> nn.Sequential:
    """{_describe(parts)}.

    In the first unit of a stage the leading BN-ReLU belongs to the unit (shared by the shortcut
    and all functions), so the function starts at its first convolution (`owns_preact=False`).
    """
    layers: list[nn.Module] = []
    if owns_preact:
        layers += [nn.BatchNorm2d(in_c), nn.ReLU()]
    layers += [
{_indent(lines, 8)}
    ]
    return nn.Sequential(*layers)
''')


def post_function(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.post_function
    drop = spec.dropout
    lines: list[str] = []
    parts: list[str] = []
    for i, (k, cin, cout, stride) in enumerate(_conv_plan(spec, "in_c", "width")):
        if i > 0:
            lines += ["nn.ReLU(),"] + ([f"nn.Dropout({drop!r}),"] if drop else [])
            parts += ["ReLU"] + (["dropout"] if drop else [])
        lines += [_conv_call(k, cin, cout, stride), f"nn.BatchNorm2d({cout}),"]
        parts += [f"conv{k}x{k}", "BN"]
    return _block(f'''
def residual_function(in_c: int, width: int, stride: int) -> nn.Sequential:
    """The branch H: {_describe(parts)}."""
    return nn.Sequential(
{_indent(lines, 8)}
    )
''')


def warp_function(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.warp_function
    drop = spec.dropout
    lines = ["nn.BatchNorm2d(channels),"]
    parts = ["BN"]
    for i, k in enumerate(spec.kernels):
        if i > 0:
            lines += ["nn.ReLU(),"] + ([f"nn.Dropout({drop!r}),"] if drop else [])
            parts += ["ReLU"] + (["dropout"] if drop else [])
        lines += [f"conv(channels, channels, {k}),", "nn.BatchNorm2d(channels),"]
        parts += [f"conv{k}x{k}", "BN"]
    return _block(f'''
def residual_function(channels: int) -> nn.Sequential:
    """WarpNet's F: {_describe(parts)} (shape-preserving)."""
    return nn.Sequential(
{_indent(lines, 8)}
    )
''')


# ------------------------------------------------------------------------------- units
def preact_unit(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.PreActUnit
    k = spec.branches
    what = "f(a)" if k == 1 else f"f_1(a) + ... + f_{k}(a)"
    call = "residual_function(in_c, width, stride, owns_preact=not first)"
    functions = f"[{call}]" if k == 1 else f"\n            [{call} for _ in range({k})]\n        "
    return _block(f'''
class PreActUnit(nn.Module):
    """y = Z(a) + {what}.

    a = BN-ReLU(x) in a stage's first unit (shared by the shortcut and all functions), else a = x.
    """

    def __init__(self, in_c: int, width: int, stride: int = 1, first: bool = False) -> None:
        super().__init__()
        self.preact = nn.Sequential(nn.BatchNorm2d(in_c), nn.ReLU()) if first else None
        self.shortcut = shortcut(in_c, {_expanded(spec)}, stride)
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
    return _block(f'''
class PostUnit(nn.Module):
    """y = ReLU(Z(x) + {what})."""

    def __init__(self, in_c: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut = shortcut(in_c, {_expanded(spec)}, stride)
        self.functions = Functions({functions})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.functions.sum_shared(x))
''')


def merge_run_unit(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.blocks.MergeRunUnit
    k = spec.branches
    return _block(f'''
class MergeRunUnit(nn.Module):
    """Merge-and-run on {k} streams: f = mean_j Z_j(x_j), y_i = ReLU(f + H_i(x_i)).

    Each stream owns its shortcut Z_j. The network's last unit returns the single stream
    ReLU(f + sum_i H_i(x_i)).
    """

    def __init__(self, in_c: int, width: int, stride: int = 1, last: bool = False) -> None:
        super().__init__()
        self.shortcuts = nn.ModuleList([shortcut(in_c, {_expanded(spec)}, stride) for _ in range({k})])
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


# ------------------------------------------------------------------------------- WarpNet
def warp_stem(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.build.WarpStem
    copies = spec.widths[0] // spec.stem
    if copies > 1:
        doc = f", then {copies} concatenated copies (no parameters)"
        ret = f"x = torch.relu(self.bn(self.conv(x)))\n        return torch.cat([x] * {copies}, dim=1)"
    else:
        doc, ret = "", "return torch.relu(self.bn(self.conv(x)))"
    return _block(f'''
class WarpStem(nn.Module):
    """conv3x3 3->{spec.stem}, BN, ReLU{doc}."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, {spec.stem}, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d({spec.stem})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        {ret}
''')


def warp_transition() -> str:
    # mirrors archsearch.nn.warp.WarpTransition
    return _block('''
class WarpTransition(nn.Module):
    """Between stages: 2x2 average pooling and two concatenated copies (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2)
        return torch.cat([x, x], dim=1)
''')


def _tangents(spec: ArchSpec) -> dict[int, list[int | None]]:
    out: dict[int, list[int | None]] = {}
    for j, i in derivative_terms(spec.warp_k, spec.warp_variant):
        out.setdefault(j, []).append(i)
    return out


def jvp_helpers(spec: ArchSpec) -> str:
    """The derivative-term helper this warp variant needs (nothing for K = 1)."""
    if spec.warp_k == 1:
        return ""
    if not spec.warp_bn:
        # mirrors archsearch.nn.warp.linearised_without_bn
        return _block('''
def value_and_jvps(
    f: nn.Sequential, x: torch.Tensor, vectors: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """F(x) and, per vector v, F's JVP along v with F's BN layers left out (the "-nobn" runs).

    Tangents pass the convolutions, the primal's ReLU masks and its dropout masks; BN acts on the
    primal alone (as archsearch's warp operator does).
    """
    h = x
    ts = list(vectors)
    for layer in f:
        if isinstance(layer, nn.Conv2d):
            h = layer(h)
            ts = [F.conv2d(t, layer.weight, None, layer.stride, layer.padding) for t in ts]
        elif isinstance(layer, nn.ReLU):
            mask = (h > 0).to(h.dtype)
            h = F.relu(h)
            ts = [t * mask for t in ts]
        elif isinstance(layer, nn.Dropout):
            if layer.training and layer.p > 0:  # the tangent shares the primal's dropout mask
                keep = F.dropout(torch.ones_like(h), layer.p, True)
                h = h * keep
                ts = [t * keep for t in ts]
        else:
            h = layer(h)
    return h, ts
''')
    several = max(len(v) for v in _tangents(spec).values()) > 1
    frozen = _block('''
class FrozenBNStatistics:
    """Extra passes through F (one per further tangent) must not update BN running stats again."""

    def __init__(self, module: nn.Module, frozen: bool) -> None:
        bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        self.layers = bns if frozen else []
        self.saved: list[tuple[float | None, torch.Tensor]] = []

    def __enter__(self) -> None:
        self.saved = [(m.momentum, m.num_batches_tracked.clone()) for m in self.layers]
        for m in self.layers:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, (momentum, tracked) in zip(self.layers, self.saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


''') if several else ""
    # mirrors WarpOperator._value_and_jvps (exact JVP through train- or eval-mode BN)
    context = "FrozenBNStatistics(f, n > 0), fwAD.dual_level()" if several else "fwAD.dual_level()"
    loop = "for n, v in enumerate(vectors):" if several else "for v in vectors:"
    return frozen + _block(f'''
def value_and_jvps(
    f: nn.Sequential, x: torch.Tensor, vectors: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """F(x) and the exact Jacobian-vector products F'(x) . v, by forward-mode AD."""
    value = None
    jvps = []
    {loop}
        with {context}:
            primal, tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, v)))
        if value is None:
            value = primal
        jvps.append(tangent)
    return value, jvps
''')


def warp_operator(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.warp.WarpOperator (same sum order: x, values, then derivative terms)
    k = spec.warp_k
    if k == 1:
        return _block('''
class WarpOperator(nn.Module):
    """One sequential WarpNet unit: x + F(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.functions = nn.ModuleList([residual_function(channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.functions[0](x)
''')
    tangents = _tangents(spec)
    lines: list[str] = []
    derivs: list[str] = []
    for j in range(k):
        value = f"f{j + 1}"
        if j not in tangents:
            lines.append(f"{value} = self.functions[{j}](x)")
            continue
        names = [f"d{j + 1}{'x' if i is None else i + 1}" for i in tangents[j]]
        vectors = ", ".join("x" if i is None else f"f{i + 1}" for i in tangents[j])
        target = f"({names[0]},)" if len(names) == 1 else "(" + ", ".join(names) + ")"
        lines.append(f"{value}, {target} = value_and_jvps(self.functions[{j}], x, [{vectors}])")
        derivs += names
    total = " + ".join(["x"] + [f"f{j + 1}" for j in range(k)] + derivs)
    terms = " + ".join(["x"] + [f"F{j + 1}" for j in range(k)]
                       + [f"F{j + 1}'{'x' if i is None else f'F{i + 1}'}"
                          for j, i in derivative_terms(k, spec.warp_variant)])
    how = "exact forward-mode JVPs" if spec.warp_bn else "JVPs without F's BN layers (-nobn)"
    return _block(f'''
class WarpOperator(nn.Module):
    """{k} WarpNet units as one warp operator (WarpNet{spec.warp_variant}), all F_i read the same x.

    y = {terms}
    where F_j'v is F_j's Jacobian at x applied to v ({how}).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.functions = nn.ModuleList([residual_function(channels) for _ in range({k})])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
{_indent(lines, 8)}
        return {total}
''')


# ------------------------------------------------------------------------------- the network
def _stage_units(spec: ArchSpec) -> Iterator[tuple[int, list[str], str]]:
    """(stage, unit constructor calls, stage comment) with the widths baked in, from the layer plan."""
    if spec.unit == "warp":
        for st in warp_stages(spec):
            calls = (["WarpTransition()"] if st.stage > 0 else []) + [f"WarpOperator({st.width})"] * st.operators
            ops = f" in {_plural(st.operators, 'warp operator')} of K={spec.warp_k}" if spec.warp_k > 1 else ""
            yield st.stage, calls, f"stage {st.stage + 1}: {st.res}x{st.res}, {st.width} channels, " \
                                   f"{_plural(st.units, 'unit')}{ops}"
        return
    plan = units(spec)
    for stage, n in enumerate(spec.units):
        stage_units = [u for u in plan if u.stage == stage]
        calls = [_unit_call(spec, u) for u in stage_units]
        res, out_c = stage_units[0].res // stage_units[0].stride, stage_units[0].c_out
        yield stage, calls, f"stage {stage + 1}: {res}x{res}, {out_c} channels, {_plural(n, 'unit')}"


def _unit_call(spec: ArchSpec, u: Unit) -> str:
    template = UNIT_TEMPLATES[(spec.unit, spec.combine)]
    args = [str(u.c_in), str(u.width)] + (["stride=2"] if u.stride == 2 else [])
    if template.flag and getattr(u, template.flag):
        args.append(f"{template.flag}=True")
    return f"{template.class_name}({', '.join(args)})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _compress(calls: list[str]) -> list[str]:
    """Runs of identical units become one list comprehension."""
    out: list[str] = []
    i = 0
    while i < len(calls):
        j = i
        while j < len(calls) and calls[j] == calls[i]:
            j += 1
        out.append(f"{calls[i]}," if j - i == 1 else f"*[{calls[i]} for _ in range({j - i})],")
        i = j
    return out


def network_class(spec: ArchSpec) -> str:
    """The network: stem -> body -> head, with archsearch's attribute names and indices."""
    # mirrors archsearch.nn.build._build_preact / _build_post / _build_warp
    cls = family(spec.family).class_name
    final = spec.out_widths[2]
    body: list[str] = []
    for _, calls, comment in _stage_units(spec):
        body.append(f"# {comment}")
        body += _compress(calls)
    if spec.unit == "pre":
        stem = "nn.Conv2d(3, 16, 3, padding=1, bias=False)"
    elif spec.unit == "post":
        c1 = spec.widths[0]
        stem = (f"nn.Sequential(\n            nn.Conv2d(3, {c1}, 3, padding=1, bias=False), nn.BatchNorm2d({c1}), "
                "nn.ReLU()\n        )")
    else:
        stem = "WarpStem()"
    if spec.unit == "post":
        head = ["nn.AdaptiveAvgPool2d(1),", "nn.Flatten(),", f"nn.Linear({final}, num_classes),"]
    else:
        head = [f"nn.BatchNorm2d({final}),", "nn.ReLU(),", "nn.AdaptiveAvgPool2d(1),", "nn.Flatten(),",
                f"nn.Linear({final}, num_classes),"]
    if spec.combine == "merge":
        forward = _block(f'''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.body([x] * {spec.branches}))  # all streams start as the stem output
''')
    else:
        forward = _block('''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))
''')
    return _block(f'''
class {cls}(nn.Module):
    """{spec.name}: stem -> body -> head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = {stem}
        self.body = nn.Sequential(
{_indent(body, 12)}
        )
        self.head = nn.Sequential(
{_indent(head, 12)}
        )
        init_weights(self)

''') + forward


def build_function(spec: ArchSpec) -> str:
    cls = family(spec.family).class_name
    return _block(f'''
def build_model(num_classes: int = NUM_CLASSES, weights: str | None = None) -> nn.Module:
    """{spec.name}, freshly initialised or with `weights` loaded strictly.

    `weights` is a saved state_dict (this export's `.pt`) or an archsearch training checkpoint
    (a dict holding it under "model"); archsearch's own model loads the same state_dict.
    """
    model = {cls}(num_classes)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state.get("model"), dict):
            state = state["model"]
        model.load_state_dict(state)
    return model


if __name__ == "__main__":
    net = build_model().eval()
    print(f"{{NAME}}: {{sum(p.numel() for p in net.parameters()):,}} parameters")
    with torch.no_grad():
        print("output shape:", tuple(net(torch.zeros(2, 3, 32, 32)).shape))
''')


# ------------------------------------------------------------------------------- composition
def imports(spec: ArchSpec) -> str:
    exact_jvp = spec.unit == "warp" and spec.warp_k > 1 and spec.warp_bn
    lines = ["import torch"]
    if exact_jvp:
        lines.append("import torch.autograd.forward_ad as fwAD")
    if spec.unit != "pre" or spec.shortcut == "pad":  # F: post-unit ReLUs, option A, warp pooling
        lines.append("import torch.nn.functional as F")
    lines.append("from torch import nn")
    return "\n".join(lines) + "\n"


def blocks(spec: ArchSpec) -> list[str]:
    """Exactly the blocks this spec's network uses, in dependency order."""
    out = [conv_helper(), init_helper()]
    if spec.unit == "warp":
        out += [warp_function(spec)]
        helpers = jvp_helpers(spec)
        if helpers:
            out.append(helpers)
        out += [warp_operator(spec), warp_stem(spec), warp_transition()]
        return out
    out.append(preact_function(spec) if spec.unit == "pre" else post_function(spec))
    if spec.shortcut == "pad":
        out.append(pad_shortcut())
    out += [shortcut_helper(spec), functions_class(spec), UNIT_TEMPLATES[(spec.unit, spec.combine)].source(spec)]
    return out


def render(spec: ArchSpec, docstring: str) -> str:
    """The whole exported module for `spec`, headed by `docstring` (without quotes)."""
    head = f'"""{docstring.rstrip()}\n"""\n\n' + imports(spec) + "\n"
    head += f'NAME = "{spec.name}"\nNUM_CLASSES = {spec.num_classes}\n'
    parts = blocks(spec) + [network_class(spec), build_function(spec)]
    return head + "\n\n" + "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
