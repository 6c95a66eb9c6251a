"""The backward graph: dominators, the trunk, streams, and the trunk signals gradvet records.

Dominators are checked against their definition on random graphs; the recorded
``||dL/dx * x||`` and ``||dL/dx||`` against plain autograd (``retain_grad`` on the inputs).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import gradvet
from gradvet._graph import FlowGraph, dominators, merges, reaching, read_graph, trunk


def _graph(edges: list[list[int]], names: list[str] | None = None, roots=(0,), param_join=None) -> FlowGraph:
    names = names or ["N"] * len(edges)
    return FlowGraph(names, edges, list(roots), {}, param_join or [False] * len(edges))


def _reachable(edges: list[list[int]], roots: list[int], removed: int = -1) -> set[int]:
    seen, stack = set(), [r for r in roots if r != removed]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        stack.extend(w for w in edges[v] if w != removed)
    return seen


def test_residual_block_trunk_skips_the_branch() -> None:
    # loss(0) -> add(1) -> {branch mm(2), identity relu(3)}; mm(2) -> relu(3); relu(3) -> first layer(4)
    g = _graph([[1], [2, 3], [3], [4], []])
    idom = dominators(g)
    assert idom == [-1, 0, 1, 1, 3]
    assert trunk(g, idom, 4) == [0, 1, 3, 4]
    assert 2 not in trunk(g, idom, 4)


def test_unreachable_nodes_have_no_dominator() -> None:
    g = _graph([[1], [], []])
    assert dominators(g) == [-1, 0, -2]
    assert trunk(g, dominators(g), 2) == []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_dominators_match_their_definition_on_random_dags(data) -> None:
    n = data.draw(st.integers(2, 12))
    edges = [sorted(set(data.draw(st.lists(st.integers(v + 1, n - 1), max_size=3)))) if v < n - 1 else []
             for v in range(n)]
    roots = sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=2))))
    g = _graph(edges, roots=roots)
    idom = dominators(g)
    live = _reachable(edges, roots)
    for v in range(n):
        if v not in live:
            assert idom[v] == -2
            continue
        # d dominates v (d != v) iff removing d cuts v off from every root
        doms = {d for d in live if d != v and v not in _reachable(edges, roots, removed=d)}
        chain, d = set(), idom[v]
        while d >= 0:
            chain.add(d)
            d = idom[d]
        assert chain == doms, (edges, roots, v)


def test_merges_mark_a_foreign_stream_and_a_learned_constant() -> None:
    # loss(0) -> add(1) of the decoder stream(2, from its own tokens 3) and cross-attention(4) of the
    # encoder output(5) -> first layer(6); the encoder output also feeds the decoder stream at 2
    g = _graph([[1], [2, 4], [3, 5], [], [5], [6], []], names=["L", "AddBackward0", "AddBackward0", "EmbeddingBackward0",
                                                              "MmBackward0", "AddBackward0", "E"])
    idom = dominators(g)
    chain = trunk(g, idom, 6)
    assert chain == [0, 1, 5, 6]
    # the decoder tokens (3) are a layer's output fed by its weight only: a stream when named a source
    assert merges(g, chain, 6, frozenset({3})) == [False, True, False, False]
    assert merges(g, chain, 6) == [False, False, False, False]
    # x + pos_embed on the trunk: a parameter joins
    g2 = _graph([[1], [2], []], names=["L", "AddBackward0", "E"], param_join=[False, True, False])
    assert merges(g2, trunk(g2, dominators(g2), 2), 2) == [False, True, False]


def test_read_graph_follows_autograd_and_leaves_out_parameters() -> None:
    lin = nn.Linear(3, 3)
    x = torch.randn(2, 3, requires_grad=True)
    h = lin(x)
    y = (h + h.relu()).sum()
    g = read_graph([y.grad_fn])
    assert "AccumulateGrad" not in g.names
    k = g.index[id(h.grad_fn)]
    idom = dominators(g)
    assert k in trunk(g, idom, k)
    assert g.index[id(y.grad_fn.next_functions[0][0])] in trunk(g, idom, k)  # the add is on the trunk
    assert reaching(g, k) >= {g.index[id(y.grad_fn)], k}


class _Res(nn.Module):
    """inp -> 3 x (x + fc2(relu(fc1(x)))) -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.fc1 = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.fc2 = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for a, b in zip(self.fc1, self.fc2):
            x = x + b(torch.relu(a(x)))
        return self.head(x)


def test_monitor_records_trunk_facts_and_signals_that_match_autograd() -> None:
    torch.manual_seed(0)
    model = _Res()
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    with gradvet.Monitor(model, profile="full") as mon:
        for _ in range(2):
            model.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            mon.step(loss)
    run = mon.load()
    facts = {layer["name"]: layer.get("graph") or {} for layer in run.layers}
    # the residual stream feeds fc1 and head: on the trunk; fc1/fc2 outputs are on branches
    assert {n for n, f in facts.items() if "trunk" in f} == {"fc1.0", "fc1.1", "fc1.2", "head"}
    assert all(facts[f"fc{k}.{j}"].get("branch") for k in (1, 2) for j in range(3))
    assert not facts["inp"].get("branch") and not facts["head"].get("branch")
    pos = [facts[n]["trunk"] for n in ("fc1.0", "fc1.1", "fc1.2", "head")]
    assert pos == sorted(pos, reverse=True)  # input side first: farther from the loss
    # plain autograd: the stream entering each fc1 and the head
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0]) or a[0].retain_grad())
             for n, m in model.named_modules() if n in ("fc1.0", "fc1.1", "fc1.2", "head")]
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for h in hooks:
        h.remove()
    sens, grad = run.get("graph/in_sens"), run.get("graph/in_grad")
    for idx, layer in enumerate(run.layers):
        col = sens.values[:, idx]
        if layer["name"] not in seen:
            assert np.isnan(col).all()
            continue
        t = seen[layer["name"]]
        want_s = float((t.grad.double() * t.detach().double()).norm())
        want_g = float(t.grad.double().norm())
        assert col == pytest.approx([want_s, want_s], rel=1e-5)
        assert grad.values[:, idx] == pytest.approx([want_g, want_g], rel=1e-5)


def test_dead_units_record_values_per_unit() -> None:
    class SE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Conv2d(8, 8, 1)
            self.gate = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.conv(x))
            return (h * self.gate(self.fc(h.mean((2, 3), keepdim=True)))).mean((2, 3))

    model = SE()
    x = torch.randn(4, 3, 5, 5)
    with gradvet.Monitor(model, profile="full") as mon:
        loss = model(x).square().mean()
        loss.backward()
        mon.step(loss)
    facts = {layer["name"]: layer.get("graph") or {} for layer in mon.load().layers}
    assert facts["act"]["per_unit"] == 4 * 5 * 5  # a conv channel: every position of every sample
    assert facts["gate"]["per_unit"] == 4  # a squeeze-excitation unit: one value per sample


class _RMS(nn.Module):
    """An RMSNorm written out, as model libraries do (no torch norm class)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


class _Block(nn.Module):
    """A residual block that owns a parameter itself and holds a norm among its children."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = _RMS(d)
        self.fc = nn.Linear(d, d)
        self.scale = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.fc(self.norm(x))


def test_norms_are_recognised_by_what_they_do_not_by_their_class() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), _Block(16), nn.LayerNorm(16), _Block(16), nn.BatchNorm1d(16),
                          nn.Linear(16, 4))
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    with gradvet.Monitor(model, profile="full") as mon:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)
    norm = {layer["name"] for layer in mon.load().layers if (layer.get("graph") or {}).get("norm")}
    assert norm == {"1.norm", "2", "3.norm", "4"}


def test_attention_inputs_are_the_layers_a_softmax_reads() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Att(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.out = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            w = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 8**0.5, dim=-1)
            return self.out(x + w @ self.v(x))

    # a fused attention module projects inside itself: the layer feeding it is what its softmax reads
    for model, want in ((Att(), {"q", "k"}), (nn.Sequential(nn.Linear(8, 8), _Wrap(mha)), {"0"})):
        x = torch.randn(2, 5, 8)
        with gradvet.Monitor(model, profile="full") as mon:
            loss = model(x).square().mean()
            loss.backward()
            mon.step(loss)
        att = {layer["name"] for layer in mon.load().layers if (layer.get("graph") or {}).get("attention")}
        assert att == want, att


class _Wrap(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.mha = mha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


def test_two_forwards_then_one_backward_measure_each_input_with_its_own_gradient() -> None:
    torch.manual_seed(0)
    model = _Res()
    xs = [torch.randn(4, 6), 3 * torch.randn(4, 6)]
    ys = [torch.randint(0, 4, (4,)) for _ in xs]
    with gradvet.Monitor(model, profile="full") as mon:
        for _ in range(2):
            model.zero_grad()
            loss = sum(F.cross_entropy(model(x), y) for x, y in zip(xs, ys))
            loss.backward()
            mon.step(loss)
    run = mon.load()
    seen: dict[str, list[torch.Tensor]] = {"fc1.1": [], "head": []}

    def keep(name: str):
        def hook(_m, a):
            a[0].retain_grad()
            seen[name].append(a[0])
        return hook

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in model.named_modules() if n in seen]
    model.zero_grad()
    sum(F.cross_entropy(model(x), y) for x, y in zip(xs, ys)).backward()
    for h in hooks:
        h.remove()
    names = [layer["name"] for layer in run.layers]
    for name, ts in seen.items():
        want = float(torch.sqrt(sum((t.grad.double() * t.detach().double()).square().sum() for t in ts)))
        assert run.get("graph/in_sens").values[-1, names.index(name)] == pytest.approx(want, rel=1e-5)


class _ResBF16(nn.Module):
    """Trunk inputs that are bf16 under CPU autocast (a Linear's output and a residual sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc0, self.fc1, self.fc2, self.head = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc0(x)
        h = h + self.fc1(torch.relu(h))
        return self.head(self.fc2(h))


def test_half_precision_trunk_inputs_measured_in_float32() -> None:
    # inputs and their gradients are held to the end of the backward pass and reduced together
    # (stats._batch.HeldInputs): bf16 ones are multiplied in float32, as g.float() * x.float()
    torch.manual_seed(0)
    model = _ResBF16()
    x, y = torch.randn(5, 6), torch.randint(0, 4, (5,))

    def loss_of() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return F.cross_entropy(model(x).float(), y)

    with gradvet.Monitor(model, profile="full") as mon:
        for _ in range(2):
            model.zero_grad()
            loss = loss_of()
            loss.backward()
            mon.step(loss)
    run = mon.load()
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m, a):
            a[0].retain_grad()
            seen[name] = a[0]
        return hook

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in model.named_modules() if n in ("fc2", "head")]
    model.zero_grad()
    loss_of().backward()
    for h in hooks:
        h.remove()
    names = [layer["name"] for layer in run.layers]
    sens, grad = run.get("graph/in_sens").values[-1], run.get("graph/in_grad").values[-1]
    for name, t in seen.items():
        assert t.dtype == torch.bfloat16
        assert np.isfinite(sens[names.index(name)])
        assert sens[names.index(name)] == pytest.approx(float((t.grad.float() * t.detach().float()).norm()), rel=1e-5)
        assert grad[names.index(name)] == pytest.approx(float(t.grad.float().norm()), rel=1e-5)
