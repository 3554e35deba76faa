"""The decision tree that sampling walks: budget -> family -> axes (or -> candidate)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from archsearch.space.results import Candidate, Node


def decision_tree(points: list[Candidate], paths: list[list[tuple[str, Any]]],
                  ranges: dict[str, tuple[int, int, int]]) -> tuple[Node, list[Candidate]]:
    """The sampling tree over the points' choice paths, and the points with their trial params.

    A decision's parameter name is plain where every node of that base offers the same choices,
    else it carries the earlier choices (Optuna needs one distribution per name)."""
    points = list(points)
    root = Node()
    for index, (point, path) in enumerate(zip(points, paths, strict=True)):
        node = root
        for depth_i, (base, value) in enumerate(path):
            node.base = base
            node.prefix = tuple(path[:depth_i])
            if depth_i == len(path) - 1:
                node.choices[value] = index
            else:
                node = node.choices.setdefault(value, Node())
        if not path:
            root.choices[None] = index
        del point
    # parameter names: plain where every node of that base offers the same choices
    by_base: dict[str, list[Node]] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node.choices) > 1:
            by_base.setdefault(node.base, []).append(node)
        stack.extend(c for c in node.choices.values() if isinstance(c, Node))
    for base, nodes in by_base.items():
        sets = {tuple(map(repr, n.choices)) for n in nodes}
        plain = len(sets) == 1
        for n in nodes:
            if plain:
                n.param = base
                rng = ranges.get(base)
                if rng is not None and list(n.choices) == list(range(rng[0], rng[1] + 1, rng[2])):
                    n.int_range = rng
            else:
                n.param = base + "|" + ",".join(f"{k.split('.')[-1]}={v}" for k, v in n.prefix if k != "family")
    # record each point's trial params
    for index, path in enumerate(paths):
        node: Any = root
        params: dict[str, Any] = {}
        for _, value in path:
            if node.param is not None:
                params[node.param] = value
            node = node.choices[value]
        point = points[index]
        points[index] = replace(point, trial_params=params)
    return root, points
