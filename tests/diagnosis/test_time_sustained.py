"""Exploding through time needs growth that runs through the sequence. A word-level LSTM language model
(pytorch/examples' word_language_model, in gradvet.corpus) after 40 AdamW steps got
`exploding_gradients (warning)`: its first time steps receive 17x the gradient of its last ones because
every step has a loss term, not because a Jacobian grows."""

from __future__ import annotations

import numpy as np
import torch

import gradvet
from gradvet.corpus import call, cases
from gradvet.diagnosis._time import _sustained


def test_geometric_growth_is_sustained_and_end_effects_are_not() -> None:
    T = 32
    geometric = 1.15 ** np.arange(T)[::-1]  # the same factor every step: an explosion
    att = float(np.log10(geometric[:3].mean() / geometric[-3:].mean()))
    assert att > 1.0 and _sustained(geometric, att)
    lm = np.full(T, 5e-4)  # flat in the middle, a rise at the first steps: per-step losses
    lm[:4] = [8e-3, 6e-3, 3e-3, 2e-3]
    lm[-2:] = [3e-4, 2.5e-4]
    att = float(np.log10(lm[:3].mean() / lm[-3:].mean()))
    assert att > 1.0 and not _sustained(lm, att)


def test_a_training_lstm_language_model_is_not_exploding() -> None:
    torch.set_num_threads(1)
    case = next(c for c in cases() if c.id == "torch/word_lm_lstm")
    model, (x, y), loss_fn = case.build(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with gradvet.Monitor(model, optimizer=opt, profile="full") as mon:
        for _ in range(40):
            opt.zero_grad()
            loss = loss_fn(call(model, x), y)
            loss.backward()
            mon.step(loss)
            opt.step()
    run = mon.load()
    prof = np.nanmedian(run.get("time/rnn").values.astype(np.float64), axis=0)
    T, k = len(prof), max(1, len(prof) // 10)
    end_to_end = np.log10(prof[:k].mean() / prof[-k:].mean())
    quartiles = np.log10(prof[T // 4] / prof[(3 * T) // 4])
    assert end_to_end > 1.0 and quartiles < 0.3 * end_to_end  # the case: big at the ends, flat between
    assert "exploding_gradients" not in mon.report().kinds()
    assert run.loss[-1] < run.loss[0]
