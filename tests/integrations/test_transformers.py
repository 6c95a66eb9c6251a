"""GradvetCallback for the Hugging Face Trainer, on a tiny BERT built from a config (no downloads)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it (transformers[torch])

import gradvet  # noqa: E402
from gradvet.integrations.transformers import GradvetCallback  # noqa: E402

STEPS, ACCUM, BATCH = 4, 2, 4


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


def dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"input_ids": torch.randint(0, 50, (10,), generator=g), "labels": torch.tensor(i % 2)}
        for i in range(STEPS * ACCUM * BATCH)
    ]


class GradSpy(transformers.TrainerCallback):
    """Independent record of what the optimizer is about to see: plain ``p.grad.norm()``."""

    def __init__(self) -> None:
        self.norms: list[list[float]] = []

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        self.norms.append([p.grad.norm().item() for p in model.parameters() if p.requires_grad])


def train(
    tmp_path: Path, max_grad_norm: float, accum: int = ACCUM, attach: bool = False, report_to: Any = (), **cb_kwargs: Any
) -> tuple[gradvet.Run, GradSpy, Any]:
    cb_kwargs = {"profile": "full", "print_findings": False, **cb_kwargs}
    cb = GradvetCallback(record=tmp_path / "hf.gradvet", **cb_kwargs)
    spy = GradSpy()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=accum,
        max_steps=STEPS, learning_rate=1e-3, max_grad_norm=max_grad_norm, logging_steps=1, report_to=list(report_to),
        use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=dataset(), callbacks=[spy])
    if attach:
        cb.attach(trainer)
    else:
        trainer.add_callback(cb)
    trainer.train()
    trainer.gradvet = cb
    return gradvet.load(tmp_path / "hf.gradvet"), spy, trainer


def clip_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if "after the Trainer clips" in str(w.message)]


def trainer_grad_norms(trainer: Any) -> np.ndarray:
    """The Trainer's own global norm per step: what ``clip_grad_norm_`` returned, before clipping."""
    return np.asarray([h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h])


@pytest.mark.timeout(120)
def test_hf_records_what_the_optimizer_sees(tmp_path: Path) -> None:
    run, spy, trainer = train(tmp_path, max_grad_norm=0.0)
    assert run.meta["status"] == "finished"
    np.testing.assert_array_equal(run.steps, np.arange(STEPS))
    np.testing.assert_allclose(run.series("param/grad_norm").values, np.asarray(spy.norms), rtol=1e-5)
    assert "bert.encoder.layer.0.attention.self.query" in run.layer_names
    assert 0.6 < run.loss.mean() < 0.8  # mean cross-entropy of 2 balanced classes: about ln 2


def test_hf_loss_is_the_models_loss(tmp_path: Path) -> None:
    # without accumulation the Trainer logs the model's loss itself (rounded to 4 digits);
    # with accumulation gradvet records the mean of the micro-batches' outputs.loss
    run, _, trainer = train(tmp_path, max_grad_norm=0.0, accum=1)
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    np.testing.assert_allclose(run.loss, logged, atol=1e-3)


@pytest.mark.timeout(120)
def test_hf_no_clipping_is_recorded_as_raw(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, spy, trainer = train(tmp_path, max_grad_norm=0.0)
    assert clip_warnings(caught) == []
    assert run.meta["grad_norms"] == "pre_clip" and run.meta["max_grad_norm"] == 0.0
    total = np.linalg.norm(run.series("param/grad_norm").values, axis=1)
    np.testing.assert_allclose(total, trainer_grad_norms(trainer), rtol=1e-5)
    assert not any(k.startswith("gradvet/") for h in trainer.state.log_history for k in h)  # not attached


@pytest.mark.timeout(120)
def test_hf_norms_are_measured_before_clipping(tmp_path: Path) -> None:
    clip = 1e-3  # every step is clipped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, spy, trainer = train(tmp_path, max_grad_norm=clip)
    assert clip_warnings(caught) == []
    assert run.meta["grad_norms"] == "pre_clip" and run.meta["max_grad_norm"] == clip
    norms = run.series("param/grad_norm").values
    total = np.linalg.norm(norms, axis=1)
    np.testing.assert_allclose(total, trainer_grad_norms(trainer), rtol=1e-5)  # the Trainer's pre-clip norm
    assert (total > 10 * clip).all()
    # what the optimizer then sees is the recorded gradient times torch's clip coefficient
    coef = np.minimum(1.0, clip / (total + 1e-6))
    np.testing.assert_allclose(np.asarray(spy.norms), norms * coef[:, None], rtol=1e-4)
    assert np.nanmax(run.series("layer/grad_norm").values) > 1e-2  # dL/d output: never clipped


@pytest.mark.timeout(120)
def test_hf_post_clip_is_recorded_and_warned_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run, spy, trainer = train(tmp_path, max_grad_norm=1e-3, pre_clip=False, print_findings=True)
    (message,) = clip_warnings(caught)
    assert "max_grad_norm=0.001" in message and "max_grad_norm=0 " in message and "\n" not in message
    assert run.meta["grad_norms"] == "post_clip" and run.meta["max_grad_norm"] == 1e-3
    norms = run.series("param/grad_norm").values
    np.testing.assert_allclose(norms, np.asarray(spy.norms), rtol=1e-5)  # what the optimizer saw
    np.testing.assert_allclose(np.linalg.norm(norms, axis=1), 1e-3, rtol=1e-3)  # clipped
    out = capsys.readouterr().out
    assert "note: gradient norms were recorded after clipping to max_grad_norm=0.001" in out


@pytest.mark.timeout(180)
def test_hf_live_scalars_reach_log_history_and_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    run, _, trainer = train(tmp_path, max_grad_norm=1e-3, attach=True, log_every=2, report_to=["tensorboard"])
    rows = [h for h in trainer.state.log_history if "gradvet/grad_norm" in h]
    assert [h["step"] for h in rows] == [1, 2, 3, 4]
    steps = np.asarray([h["step"] for h in rows]) - 1  # the monitor step each row reports
    logged = np.asarray([h["gradvet/grad_norm"] for h in rows])
    np.testing.assert_allclose(logged, trainer_grad_norms(trainer), rtol=1e-5)  # pre-clip, like the Trainer's
    np.testing.assert_allclose(logged, np.linalg.norm(run.series("param/grad_norm").values[steps], axis=1), rtol=1e-5)
    # diagnosis scalars at most every log_every=2 steps, from the run so far
    diag = [h for h in rows if "gradvet/findings" in h]
    assert [h["step"] for h in diag] == [1, 3]
    rms = run.series("layer/grad_rms")
    # parameter layers only, without the root (whose output is the loss: dL/d output = 1)
    cols = [j for j, la in enumerate(run.layers) if la["name"] and la["role"] in ("param", "recurrent")]
    for h in diag:
        row = rms.values[list(rms.steps).index(h["step"] - 1)][cols]
        row = row[np.isfinite(row) & (row > 0)]
        np.testing.assert_allclose([h["gradvet/signal_min"], h["gradvet/signal_max"]], [row.min(), row.max()], rtol=1e-6)
        assert h["gradvet/signal_ratio"] == pytest.approx(row.max() / row.min(), rel=1e-6)
    assert diag[-1]["gradvet/findings"] >= 0
    # through the Trainer's report_to backends: TensorBoard got the same values
    (events,) = (tmp_path / "out").rglob("events.out.tfevents*")  # the Trainer's TensorBoardCallback wrote it
    acc = ea.EventAccumulator(str(events.parent), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    tb = acc.Scalars("train/gradvet/grad_norm")
    assert [e.step for e in tb] == [1, 2, 3, 4]
    np.testing.assert_allclose([e.value for e in tb], logged, rtol=1e-6)


@pytest.mark.parametrize(
    ("args", "opt", "pre_clip", "expected"),
    [
        ({"world_size": 1}, {"gradient_state": object()}, True, None),
        ({"world_size": 1}, {"gradient_state": object()}, False, "pre_clip=False"),
        ({"world_size": 2}, {"gradient_state": object()}, True, "several processes"),
        ({"world_size": 1, "deepspeed": "ds.json"}, {"gradient_state": object()}, True, "DeepSpeed"),
        ({"world_size": 1}, {"gradient_state": object(), "accelerator_state": {"distributed_type": "DistributedType.DEEPSPEED"}}, True, "DeepSpeed"),
        ({"world_size": 1}, {}, True, "not Accelerate's"),
    ],
)
def test_hf_when_norms_are_post_clip(args: dict, opt: dict, pre_clip: bool, expected: Any) -> None:
    from types import SimpleNamespace

    from gradvet.integrations.transformers import _post_clip_reason

    if "accelerator_state" in opt:
        opt = {**opt, "accelerator_state": SimpleNamespace(**opt["accelerator_state"])}
    reason = _post_clip_reason(SimpleNamespace(**args), pre_clip, SimpleNamespace(**opt))
    assert reason is None if expected is None else expected in reason
