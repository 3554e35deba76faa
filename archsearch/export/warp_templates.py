"""Source templates of WarpNet's blocks for `archsearch export` (see `archsearch.export.templates`).

Each mirrors one module of `archsearch.nn.blocks` / `archsearch.nn.warp` / `archsearch.nn.build`
attribute for attribute, so the exported file loads archsearch's WarpNet state_dict strictly.
"""

from __future__ import annotations

from archsearch.arch.plan import derivative_terms
from archsearch.arch.spec import ArchSpec
from archsearch.export.templates import block, describe, indent


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
    return block(f'''
def residual_function(channels: int) -> nn.Sequential:
    """WarpNet's F: {describe(parts)} (shape-preserving)."""
    return nn.Sequential(
{indent(lines, 8)}
    )
''')


# ------------------------------------------------------------------------------- WarpNet
def warp_stem(spec: ArchSpec) -> str:
    # mirrors archsearch.nn.build.WarpStem
    copies = spec.widths[0] // spec.stem
    if copies > 1:
        doc = f", then {copies} concatenated copies (no parameters)"
        ret = f"x = torch.relu(self.bn(self.conv(x)))\n        return torch.cat([x] * {copies}, dim=1)"
    else:
        doc, ret = "", "return torch.relu(self.bn(self.conv(x)))"
    return block(f'''
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
    return block('''
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
        return block('''
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
    frozen = block('''
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
    return frozen + block(f'''
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
        return block('''
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
    return block(f'''
class WarpOperator(nn.Module):
    """{k} WarpNet units as one warp operator (WarpNet{spec.warp_variant}), all F_i read the same x.

    y = {terms}
    where F_j'v is F_j's Jacobian at x applied to v ({how}).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.functions = nn.ModuleList([residual_function(channels) for _ in range({k})])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
{indent(lines, 8)}
        return {total}
''')
