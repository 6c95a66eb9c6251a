"""Each exporter's output, read back with the backend's own reader, equals the record."""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradvet
import gradvet.export
from gradvet.export._source import scalar_series, steps_rows

STEPS = 6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
        self.unused = nn.Linear(2, 2)  # never gets a gradient: NaN in the record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "run.gradvet"
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradvet.Monitor(model, optimizer=opt, record=path, profile="full", layer_every=2) as monitor:
        for _ in range(STEPS):
            opt.zero_grad()
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            monitor.step(loss)
            opt.step()
    return path


def expected(path: Path) -> dict[str, dict[int, float]]:
    """Tag -> {step: value}, straight from the record's arrays (independent of the exporters)."""
    run = gradvet.load(path)
    out: dict[str, dict[int, float]] = {}
    for metric in run.metrics:
        s = run.series(metric)
        if metric.startswith("time/"):
            continue
        if s.values.ndim == 1:
            cols = {"": s.values}
        else:
            # param/ columns are parameters; layer/ and graph/ columns are layers
            names = run.param_names() if metric.startswith("param/") else [la["name"] or "(root)" for la in run.layers]
            cols = {f"/{n}": s.values[:, j] for j, n in enumerate(names)}
        for suffix, col in cols.items():
            pts = {int(st): float(v) for st, v in zip(s.steps, col) if not np.isnan(v)}
            if pts:
                out[f"gradvet/{metric}{suffix}"] = pts
    return out


def test_scalar_series_drops_nan_and_names_columns(record: Path) -> None:
    series = list(scalar_series(gradvet.load(record)))
    tags = {t for t, _, v in series if len(v)}
    assert tags == set(expected(record))
    assert "gradvet/param/grad_norm/unused.weight" not in tags  # all NaN: nothing written
    assert "gradvet/param/param_norm/unused.weight" in tags
    rows = steps_rows(series)
    assert [s for s, _ in rows] == list(range(STEPS))


def test_tensorboard_roundtrip(record: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea

    gradvet.export.tensorboard(record, tmp_path / "tb", histograms_every=2)
    acc = ea.EventAccumulator(str(tmp_path / "tb"), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    want = expected(record)
    assert set(acc.Tags()["scalars"]) == set(want)
    for tag, pts in want.items():
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert got.keys() == pts.keys(), tag
        np.testing.assert_allclose(list(got.values()), list(pts.values()), rtol=1e-6, err_msg=tag)
    hist = acc.Histograms("gradvet/hist/param_grad_norm")
    assert [h.step for h in hist] == [0, 2, 4]
    norms = gradvet.load(record).series("param/grad_norm").values[0]
    finite = norms[np.isfinite(norms)]
    assert hist[0].histogram_value.num == finite.size
    np.testing.assert_allclose(hist[0].histogram_value.sum, finite.sum(), rtol=1e-5)


def _read_wandb(path: Path) -> list[dict[str, Any]]:
    """History rows of an offline ``.wandb`` file (LevelDB-log records of wandb protobufs)."""
    import json

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, buf, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return rows


def test_wandb_offline_roundtrip(record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = gradvet.export.wandb(record, project="gradvet-test", dir=str(tmp_path))
    files = list(Path(run_dir).glob("*.wandb"))
    assert len(files) == 1, list(Path(run_dir).iterdir())
    rows = _read_wandb(files[0])
    # wandb's service process writes the file; on a loaded machine the last records can land
    # a moment after finish() returns, so poll briefly before comparing
    deadline = time.monotonic() + 20
    while not any(k.startswith("gradvet/") for r in rows for k in r) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = _read_wandb(files[0])
    want = expected(record)
    got: dict[str, dict[int, float]] = {}
    for row in rows:
        for k, v in row.items():
            if k.startswith("gradvet/"):
                got.setdefault(k, {})[int(row["_step"])] = v
    assert got.keys() == want.keys()
    for tag, pts in want.items():
        assert got[tag].keys() == pts.keys(), tag
        np.testing.assert_allclose(list(got[tag].values()), list(pts.values()), rtol=1e-6, err_msg=tag)


def test_mlflow_roundtrip(record: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from gradvet.export._mlflow import mlflow_key

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    run_id = gradvet.export.mlflow(record, tracking_uri=uri, run_name="t")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # needed to read a file store, MLflow >= 3.7
    client = MlflowClient(uri)
    assert set(client.get_run(run_id).data.metrics) == {mlflow_key(t) for t in expected(record)}
    for tag, pts in expected(record).items():
        hist = client.get_metric_history(run_id, mlflow_key(tag))
        got = {m.step: m.value for m in hist}
        assert got.keys() == pts.keys(), tag
        np.testing.assert_allclose(list(got.values()), list(pts.values()), rtol=1e-6, err_msg=tag)
    assert mlflow_key("gradvet/layer/grad_norm/(root)") == "gradvet/layer/grad_norm/_root_"


def test_export_rejects_wrong_source() -> None:
    with pytest.raises(TypeError, match="record path"):
        gradvet.export.as_run(42)
    with pytest.raises(ValueError, match="histograms_every"):
        gradvet.export.tensorboard(gradvet.Run(), "x", histograms_every=-1)
