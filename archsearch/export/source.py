"""The whole exported module of a spec: the blocks it uses, its network class and `build_model`.

The network's body is written from the layer plan (`archsearch.arch.plan`), unit by unit with its
channels baked in, so it matches archsearch's module tree index for index.
"""

from __future__ import annotations

from collections.abc import Iterator

from archsearch.arch.families import family
from archsearch.arch.plan import Unit, units, warp_stages
from archsearch.arch.spec import ArchSpec
from archsearch.export.templates import (
    UNIT_TEMPLATES,
    block,
    conv_helper,
    functions_class,
    indent,
    init_helper,
    pad_shortcut,
    post_function,
    preact_function,
    shortcut_helper,
)
from archsearch.export.warp_templates import jvp_helpers, warp_function, warp_operator, warp_stem, warp_transition


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
    # mirrors archsearch.nn.build._build_units / _build_warp
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
        forward = block(f'''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.body([x] * {spec.branches}))  # all streams start as the stem output
''')
    else:
        forward = block('''
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))
''')
    return block(f'''
class {cls}(nn.Module):
    """{spec.name}: stem -> body -> head."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = {stem}
        self.body = nn.Sequential(
{indent(body, 12)}
        )
        self.head = nn.Sequential(
{indent(head, 12)}
        )
        init_weights(self)

''') + forward


def build_function(spec: ArchSpec) -> str:
    cls = family(spec.family).class_name
    return block(f'''
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
