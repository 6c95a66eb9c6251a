"""Vanishing and exploding gradients through time (recurrent layers).

Rule: ``att = log10(||dL/dx_t|| at the first 10% of time steps / at the last 10%)``
for each RNN/LSTM/GRU input sequence (median over measured steps). Vanishing at
``att <= -2`` (error at -4), exploding at ``att >= +1`` (Bengio et al., 1994;
Pascanu et al., 2013: the gradient through time is a product of Jacobians whose
norm is bounded by the recurrent matrix's spectral radius times the activation's
derivative). Calibration on the adding problem (hidden 32, loss on the last
step): a plain tanh RNN at PyTorch's init gives -3.4 at T=20 and -8.7 at T=50;
an LSTM with default gate biases (forget gate near 0.5) -4.6 at T=20; GRU -3.8 at
T=20; a chrono-initialised LSTM (Tallec & Ollivier, 2018) stays between -0.1 and
-0.8 up to T=200; an RNN with an orthogonal recurrent matrix of gain 2 gives
+1.9 at T=20 and +3.6 at T=50. Exploding also needs the growth to run through the
middle of the sequence (:func:`_sustained`): a language model's loss at every step
makes the first steps receive more without any explosion.

A vanishing plain RNN whose outputs are saturated (>= 50% where tanh' < 0.1, the
saturated-units rule's warning level, read off the layer's output by its taps) gets the
cause ``saturated_recurrence`` first: each step's Jacobian is ``diag(tanh') W_hh``, so a
saturated state multiplies the gradient by less than 0.1 per step whatever ``W_hh`` is
(Bengio, Simard & Frasconi, 1994; Pascanu et al., 2013). Measured on an ``nn.RNN(8, 16)``
read at its last of 10 steps: inputs scaled by 50 saturate 92% of its outputs, standardised
inputs 0%.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from gradvet.diagnosis._context import LARGE_GAIN, first_trainable
from gradvet.diagnosis._engine import register_rule
from gradvet.diagnosis._measures import TimeProfile, recent_median, time_profiles
from gradvet.diagnosis._prescribe import remedy
from gradvet.findings import Cause, Finding, Remedy
from gradvet.record._run import Run

VANISH_WARN, VANISH_ERROR = -2.0, -4.0
EXPLODE_WARN, EXPLODE_ERROR = 1.0, 3.0
#: fraction of a recurrent layer's outputs saturated from which it is blamed (the saturated-units rule's warning)
SATURATED = 0.5


def saturation(run: Run, layer: dict) -> Optional[float]:
    """The median ``sat_frac`` of ``layer`` over the last three layer steps, as the saturated-units rule reads
    it (None where not measured)."""
    s = run.get("layer/sat_frac")
    if s is None or not len(s.steps) or layer["index"] >= s.values.shape[1]:
        return None
    med = float(recent_median(s.values[-3:, [layer["index"]]])[0])
    return None if np.isnan(med) else med


def unnormalised_inputs(run: Run, layer: dict) -> Optional[str]:
    """Why a saturated recurrent ``layer`` is saturated by its inputs, or None where that is not shown.

    As the saturated-units rule decides it for a feed-forward layer: the layer is the first trainable one
    (it reads the data, not an embedding) and its input weights have ordinary scale. Its recurrent matrix
    must also be contractive (spectral radius < 1): with ``|h| <= 1`` the recurrent term then stays small,
    and with no input the state decays to 0, so a saturated state is the inputs' doing.
    """
    f = layer.get("facts") or {}
    gain, radius = f.get("init_gain"), f.get("spectral_radius")
    first = first_trainable(run)
    if first is None or first["name"] != layer["name"] or gain is None or gain >= LARGE_GAIN:
        return None
    if radius is not None and radius >= 1.0:
        return None
    recurrence = "" if radius is None else f" and a contractive recurrent matrix (spectral radius {radius:.2f})"
    return (f"{layer['name']!r} reads the data directly, with input weights of ordinary scale "
            f"({gain:.2g}/sqrt(fan_in)){recurrence}: its pre-activations are large because its inputs are; "
            "they are not standardised")


def _saturated_cause(tp: TimeProfile, sat: float) -> Cause:
    name = tp.layer["name"]
    return Cause(
        "saturated_recurrence",
        f"{100 * sat:.0f}% of {name!r}'s outputs sit where tanh' < 0.1: each step multiplies the gradient by "
        "tanh' (the Jacobian is diag(tanh') W_hh), so a saturated state passes almost nothing back "
        "(Bengio, Simard & Frasconi, 1994; Pascanu et al., 2013)",
        0.95,
    )


def _causes(tp: TimeProfile, vanishing: bool, sat: Optional[float] = None, inputs: Optional[str] = None) -> list[Cause]:
    f = tp.layer.get("facts") or {}
    mode = f.get("rnn_mode", tp.layer["type"].upper())
    T = len(tp.profile)
    causes = []
    if vanishing and sat is not None:
        causes.append(_saturated_cause(tp, sat))
        if inputs is not None:
            causes.append(Cause("unnormalised_inputs", inputs, 0.9))
    radius = f.get("spectral_radius")
    gate = f.get("forget_gate_open")
    if vanishing and gate is not None:
        what = "forget" if mode == "LSTM" else "update"
        causes.append(Cause(
            "gate_bias",
            f"the {what} gates start near {gate:.2f} (bias {f.get('forget_gate_bias', f.get('update_gate_bias', 0.0)):.2g}), so "
            f"the memory is multiplied by about {gate:.2f} each step: {gate:.2f}^{T} = {gate ** T:.1e} over {T} steps",
            0.9 if gate < 0.8 else 0.5,
        ))
    if radius is not None and mode.startswith("RNN"):
        if vanishing and radius < 1.0:
            causes.append(Cause(
                "contractive_recurrence",
                f"the recurrent matrix has spectral radius {radius:.2f} < 1 and tanh' <= 1, so each step "
                f"shrinks the gradient (about {radius:.2f}^{T} = {radius ** T:.1e} over {T} steps)",
                0.9,
            ))
        elif not vanishing and radius > 1.0:
            causes.append(Cause(
                "expansive_recurrence",
                f"the recurrent matrix has spectral radius {radius:.2f} > 1, so the gradient can grow by "
                f"up to {radius:.2f}x per step",
                0.9,
            ))
    causes.append(Cause("sequence_length", f"{T} time steps between the loss and the first inputs", 0.4))
    return causes


#: why the GRU swap comes with its gates initialised: pytorch/examples' word-level RNN_TANH model read as a
#: classifier (hidden 64, the loss on the last of 32 steps) passes 1.7e-7 of the last step's gradient to the
#: first; swapped for a GRU at PyTorch's init (update gates near 0.5) 4.5e-6, still vanishing; with chrono
#: gates (init:chrono, as ``treat`` applies after the swap) 1.7
GATED_WITH_CHRONO = ("swap in a GRU and chrono-initialise its gates (init:chrono, t_max = the sequence length), "
                     "as treat does: a GRU at PyTorch's default init keeps about half its state per step and "
                     "vanishes almost as fast")


def _remedies(tp: TimeProfile, vanishing: bool, inputs: Optional[str] = None) -> list[Remedy]:
    mode = (tp.layer.get("facts") or {}).get("rnn_mode", "")
    if vanishing and inputs is not None:  # saturated by its inputs: standardise them first
        return [remedy("data:normalize", 0.95), *_remedies(tp, vanishing)]
    if not vanishing:
        return [remedy("clip:norm", 0.9, "Pascanu et al. (2013) clip the gradient norm for RNNs"),
                remedy("init:orthogonal", 0.7), remedy("lr:lower", 0.4), remedy("optim:rmsprop", 0.3)]
    if mode == "LSTM":
        return [remedy("init:chrono", 0.9), remedy("init:forget_gate_bias", 0.8)]
    if mode == "GRU":
        return [remedy("init:chrono", 0.8), remedy("init:forget_gate_bias", 0.7)]
    # the swap alone is no cure: a GRU at PyTorch's init keeps about half its state per step, as an LSTM does
    return [remedy("arch:gated_rnn", 0.9, GATED_WITH_CHRONO), remedy("init:orthogonal", 0.7), remedy("clip:norm", 0.3)]


#: growth between the quartiles of the sequence as a share of the growth end to end; geometric growth (a
#: product of Jacobians, every step the same factor) gives ~0.55 (half the sequence against 90% of it)
SUSTAINED = 0.3


def _sustained(profile: np.ndarray, att: float) -> bool:
    """Whether the growth towards the first steps runs through the sequence, as an explosion does.

    With a loss at every time step (a language model), ``dL/dx_t`` gathers one term per later loss, so
    the first steps receive more than the last ones with no Jacobian growing at all; and the first few
    steps, which start from a zero state, often stand out. Both stay at the ends: a word-level LSTM
    language model after 40 AdamW steps reads 17x end to end (0.008 at the first step, 2.5e-4 at the
    last) but 1.4x between the quartiles. An RNN with an orthogonal recurrent matrix of gain 2 grows by
    the same factor every step, so its quartiles carry about half of the end-to-end growth.
    """
    T = len(profile)
    if T < 8:
        return True  # too short to tell the ends from the middle
    q1, q3 = T // 4, (3 * T) // 4
    w = max(1, T // 10)
    early, late = profile[max(0, q1 - w // 2): q1 + w - w // 2].mean(), profile[q3 - w // 2: q3 + w - w // 2].mean()
    if not (early > 0 and late > 0):
        return True
    return float(np.log10(early / late)) >= SUSTAINED * att


@register_rule("time")
def time_rule(run: Run) -> list[Finding]:
    findings = []
    for tp in time_profiles(run):
        T = len(tp.profile)
        data = {"layer": tp.layer["name"], "log10_first_vs_last": round(tp.att, 3), "time_steps": T,
                "profile": [float(v) for v in tp.profile]}
        name = tp.layer["name"]
        if tp.att <= VANISH_WARN:
            ev = (f"the gradient reaching the first time steps of {name!r} is {10 ** tp.att:.1e} of that "
                  f"reaching the last ones ({T} steps; about {10 ** (tp.att / max(T - 1, 1)):.3f}x per step)")
            sat = saturation(run, tp.layer) if tp.layer.get("activation") == "tanh" else None
            sat = sat if sat is not None and sat >= SATURATED else None
            inputs = unnormalised_inputs(run, tp.layer) if sat is not None else None
            if sat is not None:
                data["sat_frac"] = round(sat, 4)
            findings.append(Finding("vanishing_gradients", "error" if tp.att <= VANISH_ERROR else "warning",
                                    [name], ev, _causes(tp, True, sat, inputs), _remedies(tp, True, inputs), data))
        elif tp.att >= EXPLODE_WARN and _sustained(tp.profile, tp.att):
            ev = (f"the gradient reaching the first time steps of {name!r} is {10 ** tp.att:.1e}x that "
                  f"reaching the last ones ({T} steps)")
            findings.append(Finding("exploding_gradients", "error" if tp.att >= EXPLODE_ERROR else "warning",
                                    [name], ev, _causes(tp, False), _remedies(tp, False), data))
    return findings
