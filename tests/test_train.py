"""iat.train.fit: exact resume after a SIGKILL mid-epoch, determinism under a seed, early stopping."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.features import FeatureEncoder
from iat.models.registry import build_source_model, make_batches
from iat.train import CHECKPOINT_FILE, TrainConfig, fit

TINY = {"d_e": 4, "d_group": 8, "cross_layers": 1, "cross_rank": 8, "hidden": [32, 32], "D": 16, "decompress": [16]}
CFG = dict(epochs=2, batch_size=128, checkpoint_every=3, threads=1, progress=False, patience=0, seed=3)


def _train(checkpoint_dir: str | None) -> dict[str, torch.Tensor]:
    """A small temporal-order run; the child process and the test both call this, so both see identical setups."""
    df, schema = generate(80, seed=5, progress=False)
    df = add_split(df)
    split = df["split"].to_numpy()
    enc = FeatureEncoder.fit(df[split == "train"], schema)
    frame = enc.transform(df)
    model = build_source_model("temporal", enc, TINY, seed=CFG["seed"])
    cfg = TrainConfig(**CFG)
    fit(model, make_batches(model, frame, split, "train", cfg.batch_size, train=True), make_batches(model, frame, split, "valid", 1024), cfg, checkpoint_dir)
    return model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, torch.Tensor]:
    return _train(None)


def test_resume_after_sigkill_mid_epoch_reaches_the_same_weights(tmp_path: Path, uninterrupted):
    ck = tmp_path / "ck"
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_train; test_train._train({str(ck)!r})"
    child = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not (ck / CHECKPOINT_FILE).exists():
        assert child.poll() is None, "child finished or died before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    state = torch.load(ck / CHECKPOINT_FILE, weights_only=True)["state"]
    assert not state["finished"] and state["epoch"] < CFG["epochs"]
    assert state["step"] > 0, "the kill should land mid-epoch"

    resumed = _train(str(ck))
    assert _same(resumed, uninterrupted)


def test_same_seed_same_weights(uninterrupted):
    assert _same(_train(None), uninterrupted)


def test_checkpoint_of_another_config_is_refused(tmp_path: Path):
    m = _Toy()
    fit(m, _XY(True), _XY(False), TrainConfig(epochs=1, lr=0.1, progress=False, threads=1), tmp_path)
    with pytest.raises(ValueError, match="different model or training config"):
        fit(_Toy(), _XY(True), _XY(False), TrainConfig(epochs=2, lr=0.2, progress=False, threads=1), tmp_path)


class _XY:
    """Two features. Valid labels follow x1; train labels follow x2: training drives valid AUC down."""

    def __init__(self, train: bool, n: int = 2000):
        g = torch.Generator().manual_seed(1 if train else 2)
        self.x = torch.randn(n, 2, generator=g)
        self.y = (self.x[:, 1 if train else 0] > 0).float()

    def __len__(self) -> int:
        return 10

    def batches(self, epoch: int):
        for i in range(10):
            sl = slice(i * 200, (i + 1) * 200)
            yield {"x": self.x[sl], "click": self.y[sl], "user_id": torch.arange(200) % 7}


class _Toy(nn.Module):
    kind = "toy"

    def __init__(self):
        super().__init__()
        self.config = {"toy": 1}
        self.w = nn.Parameter(torch.tensor([1.0, 0.0]))

    def loss(self, batch):
        return nn.functional.binary_cross_entropy_with_logits(batch["x"] @ self.w, batch["click"]), {}

    def predict(self, batch):
        return {"p": torch.sigmoid(batch["x"] @ self.w), "y": batch["click"], "user": batch["user_id"]}


def test_early_stopping_restores_the_best_epoch():
    cfg = dict(lr=0.05, progress=False, threads=1, patience=1, grad_clip=None)
    long_run, one_epoch = _Toy(), _Toy()
    res = fit(long_run, _XY(True), _XY(False), TrainConfig(epochs=6, **cfg))
    fit(one_epoch, _XY(True), _XY(False), TrainConfig(epochs=1, **cfg))
    aucs = [h["valid_auc"] for h in res.history]
    assert len(aucs) == 2 and aucs[1] < aucs[0]  # stopped after one epoch without improvement
    assert res.best_epoch == 0 and res.best_valid["auc"] == pytest.approx(aucs[0])
    assert torch.equal(long_run.w, one_epoch.w)  # the best (first) epoch's weights, not the last ones
    assert np.isfinite(res.samples_per_s) and res.samples_per_s > 0


def test_embedding_tables_get_their_own_decay():
    from iat.train import make_optimizer

    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 1))
    groups = make_optimizer(model, TrainConfig(weight_decay=0.0, embedding_decay=1e-3)).param_groups
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model[0].weight)] == 1e-3 and decay[id(model[1].weight)] == 0.0 and decay[id(model[1].bias)] == 0.0
    (single,) = make_optimizer(model, TrainConfig(weight_decay=1e-4)).param_groups  # no embedding_decay: one group
    assert single["weight_decay"] == 1e-4 and len(single["params"]) == 3


class _Payload:
    """A pickle that would run code on load (what an attacker plants as checkpoint.pt)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_is_refused_without_running_its_code(tmp_path: Path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "ck"
    ck.mkdir()
    torch.save({"model": _Payload(marker)}, ck / CHECKPOINT_FILE)
    with pytest.raises(ValueError, match="holds objects other than tensors and plain values, refused unread"):
        _train(str(ck))
    assert not marker.exists()
