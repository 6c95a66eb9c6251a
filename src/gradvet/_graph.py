"""The backward graph of one step, read once: which activations carry *all* of the gradient.

Real networks are graphs, not chains. A residual block adds its branch to a
stream that bypasses it; attention, squeeze-excitation and gates multiply two
paths; Inception and DenseNet concatenate them. Comparing ``||dL/d out||`` layer
by layer along the execution order (the chain view) then compares a branch's
inner layers with the stream, whose signals differ by design (a zero-initialised
residual branch, a layer-scale of 1e-5, the query/key projections behind a
softmax), and gives false alarms on healthy models.

What carries the gradient from the loss to the input side is the **trunk**: the
autograd nodes that lie on *every* path from the loss back to the model's first
layer. In graph terms these are the dominators of the first layer's output node
in the backward graph rooted at the loss (Lengauer & Tarjan, 1979), computed here
with the iterative algorithm of Cooper, Harvey & Kennedy (2001, "A simple, fast
dominance algorithm"). In a chain every layer boundary is on the trunk; in a
residual net the stream between blocks is, the branches are not; in a post-LN
transformer the LayerNorm outputs are. The trunk's gradient at successive depths
is what vanishes or explodes (Balduzzi et al., 2017; Yang & Schoenholz, 2017).

Pure functions over a small adjacency structure, so they are tested on hand-made
graphs as well as on autograd's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional


@dataclass
class FlowGraph:
    """A backward graph: node ``i``'s gradient flows on to the nodes in ``edges[i]`` (toward the inputs).

    Attributes:
        names: the autograd node class name of each node ("AddBackward0").
        edges: successor lists, toward the inputs.
        roots: nodes the gradient starts from (the loss).
        index: ``id(node) -> index`` for the autograd nodes read.
    """

    names: list[str]
    edges: list[list[int]]
    roots: list[int]
    index: dict[int, int] = field(default_factory=dict)


def read_graph(roots: Iterable[Any]) -> FlowGraph:
    """Walk autograd's graph from ``roots`` (``grad_fn`` nodes) toward the inputs.

    Parameter leaves (``AccumulateGrad``) end a path and are left out: the graph is
    the one activations' gradients flow through.
    """
    names: list[str] = []
    edges: list[list[int]] = []
    index: dict[int, int] = {}
    keep: list[Any] = []  # the nodes stay alive while their ids index the graph

    def add(node: Any) -> int:
        k = index.get(id(node))
        if k is None:
            k = index[id(node)] = len(names)
            names.append(type(node).__name__)
            edges.append([])
            keep.append(node)
            stack.append(node)
        return k

    stack: list[Any] = []
    root_ids = [add(r) for r in roots if r is not None]
    while stack:
        node = stack.pop()
        k = index[id(node)]
        for nxt, _ in getattr(node, "next_functions", ()):
            if nxt is None or type(nxt).__name__ == "AccumulateGrad":
                continue
            j = add(nxt)
            if j not in edges[k]:
                edges[k].append(j)
    return FlowGraph(names, edges, list(dict.fromkeys(root_ids)), index)


def dominators(g: FlowGraph) -> list[int]:
    """Immediate dominator of every node (``-1``: the virtual root above all of ``g.roots``; ``-2``: unreachable).

    Cooper, Harvey & Kennedy (2001): iterate ``idom(b) = intersect(idom(p) for p in preds(b))``
    in reverse postorder until nothing changes.
    """
    n = len(g.names)
    # postorder of a DFS from the virtual root (node n)
    succ = g.edges + [list(g.roots)]
    post: list[int] = []
    seen = [False] * (n + 1)
    seen[n] = True
    stack: list[tuple[int, int]] = [(n, 0)]
    while stack:
        v, i = stack[-1]
        if i < len(succ[v]):
            stack[-1] = (v, i + 1)
            w = succ[v][i]
            if not seen[w]:
                seen[w] = True
                stack.append((w, 0))
        else:
            stack.pop()
            post.append(v)
    order = {v: k for k, v in enumerate(post)}  # the virtual root has the highest number
    preds: list[list[int]] = [[] for _ in range(n + 1)]
    for v, ws in enumerate(succ):
        for w in ws:
            preds[w].append(v)
    idom: list[Optional[int]] = [None] * (n + 1)
    idom[n] = n

    def intersect(a: int, b: int) -> int:
        while a != b:
            while order[a] < order[b]:
                a = idom[a]  # type: ignore[assignment]
            while order[b] < order[a]:
                b = idom[b]  # type: ignore[assignment]
        return a

    changed = True
    rpo = list(reversed(post))
    while changed:
        changed = False
        for v in rpo:
            if v == n:
                continue
            new: Optional[int] = None
            for p in preds[v]:
                if idom[p] is not None:
                    new = p if new is None else intersect(p, new)
            if new is not None and idom[v] != new:
                idom[v] = new
                changed = True
    return [-2 if d is None else (-1 if d == n else d) for d in idom[:n]]


def trunk(g: FlowGraph, idom: list[int], start: int) -> list[int]:
    """The nodes every gradient path from the roots to ``start`` passes through, ``start`` included;
    nearest the loss first."""
    if start < 0 or start >= len(idom) or idom[start] == -2:
        return []
    chain = [start]
    while idom[chain[-1]] >= 0:
        chain.append(idom[chain[-1]])
    return chain[::-1]
