"""GradvetCallback for the Hugging Face Trainer, on a tiny BERT built from a config (no downloads)."""

from __future__ import annotations

import os
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


def train(tmp_path: Path, max_grad_norm: float, accum: int = ACCUM) -> tuple[gradvet.Run, GradSpy, Any]:
    cb = GradvetCallback(record=tmp_path / "hf.gradvet", profile="full", print_findings=False)
    spy = GradSpy()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=accum,
        max_steps=STEPS, learning_rate=1e-3, max_grad_norm=max_grad_norm, logging_steps=1, report_to=[],
        use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=tiny_bert(), args=args, train_dataset=dataset(), callbacks=[cb, spy])
    trainer.train()
    return gradvet.load(tmp_path / "hf.gradvet"), spy, trainer


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
def test_hf_norms_are_post_clip(tmp_path: Path) -> None:
    run, spy, _ = train(tmp_path, max_grad_norm=1e-3)
    total = np.linalg.norm(run.series("param/grad_norm").values, axis=1)
    np.testing.assert_allclose(total, 1e-3, rtol=1e-3)  # clipped before on_pre_optimizer_step
    # the layer signal (dL/d output) is taken during backward: not clipped
    assert np.nanmax(run.series("layer/grad_norm").values) > 1e-2
