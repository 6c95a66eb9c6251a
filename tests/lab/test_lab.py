"""The quick lab, run once: its records, its page, and the story its numbers tell."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gradvet
from gradvet.lab import LabConfig, run_experiments
from gradvet.lab._context import LabContext
from gradvet.lab._cure_list import CURES, FAMILIES

pytestmark = pytest.mark.slow


def test_quick_lab_writes_records_results_and_page(quick_lab: tuple[Path, dict, float]) -> None:
    index, results, _ = quick_lab  # its wall time is a benchmark figure (docs/lab.md), not a test
    assert index.name == "index.html" and (index.parent / "results.json").is_file()
    assert set(results) == {"depth", "cures", "exploding", "time", "dead", "meta"}
    records = sorted(index.parent.glob("runs/*/*.gradvet"))
    assert len(records) == 36 + len(CURES) + 8 + 10 + 3
    run = gradvet.load(records[0])
    assert run.meta["status"] == "finished" and len(run.steps) > 0


def test_lab_page_has_charts_with_data_and_no_external_refs(quick_lab: tuple[Path, dict, float]) -> None:
    html = quick_lab[0].read_text()
    charts = dict(re.findall(r'data-chart="([^"]+)" data-points="(\d+)"', html))
    assert len(charts) >= 20
    assert all(int(n) > 0 for n in charts.values()), charts
    assert "http://" not in html and "https://" not in html
    for anchor in ("depth", "cures", "exploding", "time", "dead"):
        assert f'id="{anchor}"' in html


def test_depth_sigmoid_vanishes_relu_he_does_not(quick_lab: tuple[Path, dict, float]) -> None:
    cells = quick_lab[1]["depth"]["cells"]
    sig, relu = cells["sigmoid/default/10"], cells["relu/he/10"]
    assert relu["first_signal"] >= 100 * sig["first_signal"]
    assert sig["final_loss"] > 2.2  # chance is ln 10 = 2.30
    assert relu["final_loss"] < 0.5
    # Vanishing grows with depth for sigmoid whatever the init.
    for init in ("default", "xavier", "he"):
        by_depth = [cells[f"sigmoid/{init}/{d}"]["first_signal"] for d in (2, 5, 10, 20)]
        assert by_depth == sorted(by_depth, reverse=True)
    # Shallow nets all learn.
    assert all(cells[f"{a}/{i}/2"]["final_loss"] < 0.5 for a in ("sigmoid", "tanh", "relu")
               for i in ("default", "xavier", "he"))


def test_cures_beat_the_deep_sigmoid(quick_lab: tuple[Path, dict, float]) -> None:
    cures = quick_lab[1]["cures"]["cures"]
    base = cures["sigmoid (baseline)"]
    assert "vanishing_gradients" in base["findings"]
    for label in ("+ ReLU + He init", "+ batch norm", "+ skip connections", "+ all (ReLU, He, BN, skips)"):
        assert cures[label]["final_loss"] < 0.25 * base["final_loss"], label
        assert cures[label]["first_signal_init"] > 1e3 * base["first_signal_init"], label
        assert cures[label]["test_accuracy"] > 0.85, label
    assert base["test_accuracy"] < 0.2


def test_every_family_of_cures_is_measured_charted_and_read(quick_lab: tuple[Path, dict, float]) -> None:
    index, results, _ = quick_lab
    cures = results["cures"]["cures"]
    assert list(cures) == [c.label for c in CURES]
    html = index.read_text()
    for family in FAMILIES:
        slug = family.replace(" ", "-")
        assert f'data-chart="lab-cures-loss-{slug}"' in html and f'data-chart="lab-cures-flow-{slug}"' in html
    for label, r in cures.items():
        assert r["reading"] and r["first_signal_init"] is not None, label
        assert label.replace("&", "&amp;") in html
    assert '<table class="cures">' in html
    base = cures["sigmoid (baseline)"]
    # the rectifier family with a matching init, each 10^6+ more gradient at the first layer, and learning
    for label in ("+ Leaky ReLU + He init", "+ ELU + He init", "+ SELU + LeCun normal", "+ GELU + He init",
                  "+ SiLU + He init", "+ Mish + He init"):
        assert cures[label]["first_signal_init"] > 1e6 * base["first_signal_init"], label
        assert cures[label]["final_loss"] < 0.1 and cures[label]["test_accuracy"] > 0.85, label
    # optimizers and weight decay leave the backpropagated signal where it was (same init, same first batch)
    for label in ("+ Adam", "+ RMSprop", "+ weight decay (L2 5e-4)"):
        assert cures[label]["first_signal_init"] == pytest.approx(base["first_signal_init"], rel=1e-3), label
    # dropout does not bring gradient to the first layer (docs/treatment.md)
    assert cures["+ dropout (0.1)"]["first_signal_init"] < 10 * base["first_signal_init"]
    # layer-wise pretraining: far more gradient at the first layer once fine-tuning starts, and it learns
    pre = cures["+ layer-wise pretraining"]
    assert pre["first_signal_init"] > 1e4 * base["first_signal_init"]
    assert pre["test_accuracy"] > 0.85 > 0.2 > base["test_accuracy"]
    # the shallower net has 3 Linear layers and more signal at its first
    short = cures["+ shallower (3 layers)"]
    assert short["linear_layers"] == 3 and short["first_signal_init"] > 1e4 * base["first_signal_init"]
    assert short["final_loss"] < base["final_loss"] - 0.5


def test_clipping_contains_explosions(quick_lab: tuple[Path, dict, float]) -> None:
    cases = quick_lab[1]["exploding"]["cases"]
    for runs in cases.values():
        assert runs["no clipping"]["diverged_at"] is not None
        for clip in ("norm clip (1.0)", "value clip (0.01)", "AGC (0.01)"):
            assert runs[clip]["diverged_at"] is None and runs[clip]["final_loss"] is not None
    lr = cases["learning rate too large (1.0)"]
    assert all(lr[c]["final_loss"] < 0.1 for c in ("norm clip (1.0)", "value clip (0.01)", "AGC (0.01)"))
    assert "exploding_gradients" in lr["no clipping"]["findings"]


def test_gated_cells_learn_the_adding_problem_the_rnn_does_not(quick_lab: tuple[Path, dict, float]) -> None:
    res = quick_lab[1]["time"]
    longest = str(max(res["lengths"]))
    models = res["runs"][longest]["models"]
    assert res["runs"][longest]["baseline_mse"] == pytest.approx(1 / 6, rel=0.1)
    rnn = models["RNN"]
    assert not rnn["learned"]
    for label in ("LSTM, forget bias 1", "GRU, update bias 1"):
        assert models[label]["learned"] and models[label]["mse_over_baseline"] < 0.5
        assert models[label]["test_mse"] < 0.1 * rnn["test_mse"]
        # The open memory gate carries far more gradient back to the first step at init.
        plain = models[label.split(",")[0]]["first_over_last_step_init"]
        assert models[label]["first_over_last_step_init"] > 100 * plain
    assert rnn["first_over_last_step_init"] < 1e-4


def test_dead_relus_and_leaky_cure(quick_lab: tuple[Path, dict, float]) -> None:
    runs = quick_lab[1]["dead"]["runs"]
    dead, leaky, healthy = runs["ReLU, bias -3"], runs["LeakyReLU(0.1), bias -3"], runs["ReLU, bias 0"]
    assert max(dead["dead_init"].values()) > 0.5
    assert max(healthy["dead_init"].values()) < 0.05
    assert "dead_units" in dead["findings"]
    assert leaky["final_loss"] < 0.25 * dead["final_loss"]
    assert leaky["test_accuracy"] > 0.8 > 0.5 > dead["test_accuracy"]


def test_lab_is_reproducible(tmp_path: Path) -> None:
    cfg = LabConfig(dead_steps=15)
    a = run_experiments(LabContext(tmp_path / "a", cfg, seed=3), ["dead"])["dead"]
    b = run_experiments(LabContext(tmp_path / "b", cfg, seed=3), ["dead"])["dead"]
    for res in (a, b):
        res.pop("wall_s")
        for r in res["runs"].values():
            r.pop("record")
    assert a == b


def test_unknown_experiment(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown lab experiment"):
        run_experiments(LabContext(tmp_path, LabConfig()), ["nope"])
