"""The rules as pure functions of a Run: thresholds, layer naming, ordering of causes."""

import json

import numpy as np
import pytest

from gradvet.diagnosis import diagnose
from gradvet.record import Run
from gradvet.stats import LAYER_STATS

NAMES = ["0", "1", "2", "3", "4", "5"]  # Linear, act, Linear, act, Linear, act? (built below)


def make_run(signal, acts=None, sat=None, dead=None, facts=None, steps=1):
    """A run with len(signal) Linear layers (plus an activation after each but the last)."""
    layers, order = [], 0
    n = len(signal)
    params = []
    cols = {k: [] for k in LAYER_STATS}
    for i in range(n):
        params.append({"name": f"{2 * i}.weight", "layer": str(2 * i), "shape": [4, 4], "numel": 16, "lr": None})
        layers.append({"name": str(2 * i), "type": "Linear", "role": "param", "activation": "",
                       "params": [i], "order": order, "facts": (facts or {})})
        order += 1
        for k in LAYER_STATS:
            cols[k].append({"grad_norm": signal[i], "grad_rms": signal[i]}.get(k, 0.0))
        if i < n - 1 and acts:
            layers.append({"name": str(2 * i + 1), "type": "Act", "role": "activation", "activation": acts,
                           "params": [], "order": order, "facts": {}})
            order += 1
            for k in LAYER_STATS:
                v = {"grad_norm": signal[i], "sat_frac": (sat or {}).get(i, 0.0),
                     "dead_frac": (dead or {}).get(i, 0.0)}.get(k, 0.0)
                cols[k].append(v)
    run = Run(meta={"optimizer": None}, params=params, layers=layers)
    st = np.arange(steps)
    for k, v in cols.items():
        run.add(f"layer/{k}", st, np.tile(np.array(v, dtype=np.float32), (steps, 1)))
    run.add("loss", st, np.ones(steps))
    run.add("param/grad_norm", st, np.ones((steps, n)))
    run.add("param/param_norm", st, np.full((steps, n), 10.0))
    run.add("param/grad_nonfinite", st, np.zeros((steps, n)))
    return run


def kinds(run):
    return [(f.kind, f.severity) for f in diagnose(run) if f.severity != "info"]


@pytest.mark.parametrize(
    "first, expected",
    [(1e-1, []), (1.5e-2, []), (0.9e-2, [("vanishing_gradients", "warning")]),
     (1e-5, [("vanishing_gradients", "error")]), (20.0, []), (40.0, [("exploding_gradients", "warning")]),
     (2e3, [("exploding_gradients", "error")])],
)
def test_depth_thresholds_are_ratios_to_the_output_side(first, expected):
    sig = np.geomspace(first, 1.0, 5)
    assert kinds(make_run(sig)) == expected
    # scale-free: multiplying every gradient by 1e-9 (a converged net) or 65536 (AMP) changes nothing
    assert kinds(make_run(sig * 1e-9)) == expected
    assert kinds(make_run(sig * 65536.0)) == expected


@pytest.mark.parametrize(
    "n, total, flagged", [(8, -1.7, True), (8, -1.4, False), (5, -1.9, False), (6, -1.6, True), (20, -1.9, False)]
)
def test_steady_decay_over_many_layers(n, total, flagged):
    """>= 6 layers, <= 0.6x per layer, >= 30x in all: a default-init tanh/linear stack of depth 8."""
    sig = np.geomspace(10**total, 1.0, n)
    assert kinds(make_run(sig)) == ([("vanishing_gradients", "warning")] if flagged else [])


def test_vanishing_names_the_starved_layers_input_side_first_and_states_the_factor():
    sig = [1e-6, 1e-5, 1e-3, 1e-1, 1.0]
    (f,) = diagnose(make_run(sig, acts="sigmoid"))
    assert f.kind == "vanishing_gradients"
    assert list(f.layers) == ["0", "2", "4"]  # 1e-6, 1e-5, 1e-3 are below 1%; 1e-1 is not
    assert f.data["per_layer_factor"] == pytest.approx(10 ** (-6 / 4))
    assert "0.032x per layer" in f.evidence
    assert f.causes[0].id == "saturating_activation"
    assert f.remedies[0].id == "activation:relu"
    json.dumps(f.to_dict())


def test_dead_and_saturated_thresholds_and_layer_names():
    run = make_run([1.0, 1.0, 1.0], acts="relu", dead={1: 0.55})
    (f,) = diagnose(run)
    assert (f.kind, f.severity, list(f.layers)) == ("dead_units", "warning", ["2", "3"])
    run = make_run([1.0, 1.0, 1.0], acts="relu", dead={0: 0.95})
    assert [(x.kind, x.severity) for x in diagnose(run)] == [("dead_units", "error")]
    assert kinds(make_run([1.0, 1.0, 1.0], acts="relu", dead={0: 0.45})) == []
    run = make_run([1.0, 1.0, 1.0], acts="tanh", sat={0: 0.6})
    (f,) = diagnose(run)
    assert (f.kind, list(f.layers)) == ("saturated_units", ["0", "1"])
    # a ReLU layer is never "saturated" and a tanh layer never "dead"
    assert kinds(make_run([1.0, 1.0], acts="relu", sat={0: 0.99})) == []
    assert kinds(make_run([1.0, 1.0], acts="tanh", dead={0: 0.99})) == []


def test_negative_bias_is_ranked_first_cause_of_dead_units():
    run = make_run([1.0, 1.0, 1.0], acts="relu", dead={0: 1.0}, facts={"bias_mean": -5.0, "bias_neg_frac": 1.0})
    (f,) = diagnose(run)
    assert f.causes[0].id == "negative_bias"
    assert f.remedies[0].id in ("activation:leaky_relu", "init:reset_bias")
