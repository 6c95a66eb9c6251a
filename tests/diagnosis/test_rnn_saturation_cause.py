"""A plain tanh RNN on unnormalised inputs vanishes through time because its state is saturated.

Before the RNN's output was read as a tanh output, ``gradvet.check`` on this model blamed only the
recurrent matrix's spectral radius (0.57) and the sequence length; 92% of the RNN's outputs sat where
tanh' < 0.1 and nothing said so. The same RNN on standardised inputs vanishes too (a contractive
matrix over 30 steps), and must not be told its state is saturated.
"""

from __future__ import annotations

import torch
from torch import nn

import gradvet
from gradvet.findings import Finding


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(8, 16, batch_first=True)
        self.lin = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.rnn(x)[0][:, -1])


def _vanishing(scale: float) -> tuple[Finding, gradvet.Report]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = _Classifier()
    x = torch.randn(4, 30, 8) * scale
    rep = gradvet.check(model, (x, torch.randint(0, 2, (4,))), nn.functional.cross_entropy)
    found = [f for f in rep.findings if f.kind == "vanishing_gradients"]
    assert len(found) == 1 and found[0].layers == ("rnn",)
    return found[0], rep


def test_saturated_rnn_is_blamed_on_its_saturation_then_its_inputs() -> None:
    finding, rep = _vanishing(50.0)
    sat = rep.layers[0].sat_frac
    assert rep.layers[0].name == "rnn" and sat is not None and sat > 0.9
    ids = [c.id for c in finding.causes]
    assert ids[:2] == ["saturated_recurrence", "unnormalised_inputs"]
    assert "contractive_recurrence" in ids  # the radius (0.57) still shrinks the gradient: said after
    first = finding.causes[0]
    assert f"{100 * sat:.0f}% of 'rnn''s outputs sit where tanh' < 0.1" in first.reason
    assert "Bengio" in first.reason and "Pascanu" in first.reason
    assert finding.data["sat_frac"] == round(sat, 4)
    rems = [r.id for r in finding.remedies]
    assert rems[:3] == ["data:normalize", "arch:gated_rnn", "init:orthogonal"]


def test_the_same_rnn_on_standardised_inputs_gets_no_saturation_cause() -> None:
    finding, rep = _vanishing(1.0)
    sat = rep.layers[0].sat_frac
    assert sat is not None and sat < 0.1  # measured, and low
    ids = [c.id for c in finding.causes]
    assert "saturated_recurrence" not in ids and "unnormalised_inputs" not in ids
    assert ids[0] == "contractive_recurrence"
    assert [r.id for r in finding.remedies][0] == "arch:gated_rnn"
    assert "saturated_units" not in rep.kinds()


def test_inputs_are_not_blamed_behind_an_embedding() -> None:
    """An RNN that reads a learned embedding is saturated by its weights or the embedding, not by the data:
    the saturation cause stays, the inputs are not blamed."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    emb, rnn, lin = nn.Embedding(20, 8), nn.RNN(8, 16, batch_first=True), nn.Linear(16, 2)
    with torch.no_grad():
        emb.weight.mul_(50.0)

    class _Words(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.rnn, self.lin = emb, rnn, lin

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.lin(self.rnn(self.emb(t))[0][:, -1])

    rep = gradvet.check(_Words(), (torch.randint(0, 20, (4, 30)), torch.randint(0, 2, (4,))),
                        nn.functional.cross_entropy)
    finding = next(f for f in rep.findings if f.kind == "vanishing_gradients")
    ids = [c.id for c in finding.causes]
    assert ids[0] == "saturated_recurrence" and "unnormalised_inputs" not in ids
    assert "data:normalize" not in [r.id for r in finding.remedies]


def test_the_saturated_units_finding_on_an_rnn_prescribes_recurrent_remedies() -> None:
    """The saturated-units rule names the RNN too; a norm layer or ReLU does not fit an nn.RNN, so its causes
    and remedies are the time rule's (the inputs first), not a feed-forward layer's."""
    _, rep = _vanishing(50.0)
    sat = rep.finding("saturated_units")
    assert sat is not None and sat.severity == "error" and sat.layers == ("rnn",)
    assert [c.id for c in sat.causes] == ["unnormalised_inputs", "saturating_activation"]
    assert [r.id for r in sat.remedies] == ["data:normalize", "arch:gated_rnn", "init:orthogonal"]
    assert sat.data["sat_frac"]["rnn"] == rep.layers[0].sat_frac
