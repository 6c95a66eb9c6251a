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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class FlowGraph:
    """A backward graph: node ``i``'s gradient flows on to the nodes in ``edges[i]`` (toward the inputs).

    Attributes:
        names: the autograd node class name of each node ("AddBackward0").
        edges: successor lists, toward the inputs.
        roots: nodes the gradient starts from (the loss).
        index: ``id(node) -> index`` for the autograd nodes read.
        param_join: per node, whether it adds or concatenates a parameter or a constant
            itself (``x + pos_embed``; leaves and constants are not nodes of the graph).
    """

    names: list[str]
    edges: list[list[int]]
    roots: list[int]
    index: dict[int, int] = field(default_factory=dict)
    param_join: list[bool] = field(default_factory=list)


def read_graph(roots: Iterable[Any]) -> FlowGraph:
    """Walk autograd's graph from ``roots`` (``grad_fn`` nodes) toward the inputs.

    Parameter leaves (``AccumulateGrad``) end a path and are left out: the graph is
    the one activations' gradients flow through.
    """
    names: list[str] = []
    edges: list[list[int]] = []
    param_join: list[bool] = []
    index: dict[int, int] = {}
    keep: list[Any] = []  # the nodes stay alive while their ids index the graph

    def add(node: Any) -> int:
        k = index.get(id(node))
        if k is None:
            k = index[id(node)] = len(names)
            names.append(type(node).__name__)
            edges.append([])
            param_join.append(False)
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
                # a parameter or a constant (no gradient) joins here: x + pos_embed, cat(cls, x)
                param_join[k] = param_join[k] or names[k].startswith(_JOINS)
                continue
            j = add(nxt)
            if j not in edges[k]:
                edges[k].append(j)
    return FlowGraph(names, edges, list(dict.fromkeys(root_ids)), index, param_join)


_JOINS = ("Add", "Sub", "Cat", "Stack")


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


def reaching(g: FlowGraph, target: int) -> set[int]:
    """The nodes whose gradient flows on to ``target`` (``target`` included)."""
    preds: list[list[int]] = [[] for _ in g.names]
    for v, ws in enumerate(g.edges):
        for w in ws:
            preds[w].append(v)
    seen, stack = {target}, [target]
    while stack:
        for p in preds[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def merges(g: FlowGraph, chain: list[int], start: int, sources: frozenset[int] = frozenset()) -> list[bool]:
    """Per trunk node ``chain[k]``: whether something that does not come from ``start`` (the first
    layer's output) joins the stream at it or between it and ``chain[k + 1]``: a learned constant
    (position embedding, class token) or another stream (a decoder's own tokens meeting the
    encoder's output in cross-attention).

    The gradient that crosses such a join to the input side is set by how strongly the stream
    uses what comes from ``start`` there, which at init is a design choice (a sinusoidal position
    table larger than the features, a class-attention branch behind a layer scale of 1e-5, a
    decoder that barely attends yet), not a loss along a path: the trunk is read as separate
    streams on either side. ``sources``: nodes that are layer outputs (an embedding lookup is fed by
    its weight only, like a tied head's ``weight.t()``, but it is a stream).
    """
    below = reaching(g, start)
    param_only = [p and v not in sources for v, p in enumerate(_param_only(g))]
    out = []
    for k, b in enumerate(chain):
        joins = g.names[b].startswith(_JOINS)
        flag = g.param_join[b] or any(w not in below and (not param_only[w] or joins) for w in g.edges[b])
        a = chain[k + 1] if k + 1 < len(chain) else None
        seen, stack = {b}, [b]
        while stack and not flag and a is not None:  # the region between b and a: another stream?
            for w in g.edges[stack.pop()]:
                if w == a or w in seen:
                    continue
                if w not in below and not param_only[w]:
                    flag = True
                    break
                seen.add(w)
                stack.append(w)
        out.append(flag)
    return out


def _param_only(g: FlowGraph) -> list[bool]:
    """Per node, whether only parameters flow into it (a transposed or expanded weight, a class token):
    a tied head's ``weight.t()`` is part of a layer, not another stream, unless it joins the stream."""
    memo: dict[int, bool] = {}
    for v0 in range(len(g.names)):
        stack = [(v0, False)]
        while stack:
            v, done = stack.pop()
            if v in memo:
                continue
            if done:
                memo[v] = all(memo[w] for w in g.edges[v])
                continue
            stack.append((v, True))
            stack.extend((w, False) for w in g.edges[v] if w not in memo)
    return [memo[v] for v in range(len(g.names))]


#: autograd nodes that divide by a statistic of their input: batch/layer/group/instance/RMS norm,
#: fused or written out (``x * torch.rsqrt(x.pow(2).mean(-1) + eps)``)
_NORMALISING = ("NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm", "NativeLayerNorm", "NativeGroupNorm",
                "FusedRmsNorm", "RmsNorm", "Rsqrt", "VarBackward", "StdBackward", "VarMean", "StdMean")


def normalises(out_node: Any, in_node: Any, others: frozenset[int] = frozenset(), limit: int = 64) -> bool:
    """Whether the computation from a layer's input node to its output node divides by a statistic of
    the input (what a norm does to its input), read from the autograd nodes, not the layer's class.
    ``others``: ids of other layers' output nodes, where the walk stops (a block that holds a
    LayerNorm among its children does not normalise by itself)."""
    seen: set[int] = set()
    stack = [out_node]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node is None or node is in_node or id(node) in seen or (node is not out_node and id(node) in others):
            continue
        seen.add(id(node))
        name = type(node).__name__
        if name.startswith(_NORMALISING):
            return True
        stack.extend(n for n, _ in getattr(node, "next_functions", ()) if n is not None)
    return False


#: autograd nodes of attention: a softmax, or a fused scaled-dot-product attention
_ATTENTION = ("Softmax", "_Softmax", "ScaledDotProduct", "_ScaledDotProduct", "_EfficientAttention",
              "_FlashAttention")


def attention_inputs(g: FlowGraph, outputs: frozenset[int], limit: int = 256) -> set[int]:
    """Layer output nodes (of ``outputs``) that an attention node reads, walking toward the inputs from
    each softmax or fused attention node and stopping at the first layer output on each path."""
    found: set[int] = set()
    for a in (k for k, n in enumerate(g.names) if n.startswith(_ATTENTION)):
        seen, stack = {a}, [a]
        while stack and len(seen) < limit:
            for w in g.edges[stack.pop()]:
                if w in seen:
                    continue
                seen.add(w)
                if w in outputs:
                    found.add(w)
                else:
                    stack.append(w)
    return found
