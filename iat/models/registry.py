"""Source models by kind: build one, batch a split for it, train it, and save / load it as a "source bundle".

A source bundle is a folder: ``model.pt`` (state_dict), ``config.json`` (kind, model config, train config,
``config_hash`` over those three, ``version`` = hash of the weights: the source-model version tokens carry),
``encoder.json`` (the fitted FeatureEncoder, needed to encode new instances at serving time) and
``metrics.json`` (valid / test metrics with CIs, training history).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from iat import distributed as dist
from iat.features import EncodedFrame, FeatureEncoder, json_default
from iat.models.batching import RowBatches
from iat.models.hgaq import HGAQTokenizer
from iat.models.logreg import LogRegModel
from iat.models.temporal import TemporalSourceModel
from iat.models.user_order import UserChunkBatches, UserOrderSourceModel
from iat.schema import SPLIT_COLUMN, Schema
from iat.train import BatchSource, TrainConfig, evaluate_model, fit, seed_everything

MODELS: dict[str, type[nn.Module]] = {m.kind: m for m in (TemporalSourceModel, UserOrderSourceModel, HGAQTokenizer, LogRegModel)}
SOURCE_KINDS: tuple[str, ...] = tuple(MODELS)
MODEL_FILE, CONFIG_FILE, ENCODER_FILE, METRICS_FILE = "model.pt", "config.json", "encoder.json", "metrics.json"


def build_source_model(kind: str, encoder: FeatureEncoder, config: dict[str, Any] | None = None, seed: int = 0) -> nn.Module:
    """A fresh model of ``kind``, its weights drawn from ``seed``."""
    if kind not in MODELS:
        raise ValueError(f"unknown source model kind '{kind}': expected one of {SOURCE_KINDS}")
    seed_everything(seed)
    return MODELS[kind](encoder, config)


def make_batches(model: nn.Module, frame: EncodedFrame, split: np.ndarray, target: str, batch_size: int, seed: int = 0, train: bool = False) -> BatchSource:
    """Batches of ``frame`` for ``model`` scoring the rows of split ``target``.

    Training (``train=True``) reads the target rows only, in the model's training order. Evaluation of row models
    reads the target rows; of the user-order model, every user's full log, scoring the target positions.
    """
    split = np.asarray(split)
    if split.shape != (len(frame),):
        raise ValueError(f"split has shape {split.shape}, expected ({len(frame)},)")
    is_target = split == target
    if not is_target.any():
        raise ValueError(f"no rows in split '{target}'")
    if model.kind == "user_order":
        c = model.config
        if train:
            return UserChunkBatches(frame.take(np.flatnonzero(is_target)), None, c["t_src"], batch_size, seed, c["order"], c["two_pass"])
        return UserChunkBatches(frame, is_target, c["t_src"], batch_size, seed)
    order = model.config.get("order", "time") if train else "time"
    return RowBatches(frame.take(np.flatnonzero(is_target)), batch_size, seed, order)


@dataclass
class SourceBundle:
    model: nn.Module
    encoder: FeatureEncoder
    config: dict[str, Any]  # kind, model, train, config_hash, version
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.config["kind"]


_UNHASHED_TRAIN_KEYS = ("threads", "progress", "checkpoint_every")  # how a run executes, not what it learns


def config_hash(kind: str, model_config: dict[str, Any], train_config: dict[str, Any]) -> str:
    train = {k: v for k, v in train_config.items() if k not in _UNHASHED_TRAIN_KEYS}
    blob = json.dumps({"kind": kind, "model": model_config, "train": train}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def weights_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_bundle(bundle: SourceBundle, folder: str | Path) -> Path:
    """Write the bundle folder; files are written to a temp folder first, then moved in, so a reader never
    sees half a bundle."""
    out = Path(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out.parent))
    try:
        if isinstance(bundle.model, nn.Module):
            buf = io.BytesIO()
            torch.save(bundle.model.state_dict(), buf)
            (tmp / MODEL_FILE).write_bytes(buf.getvalue())
        else:  # a model that writes its own file (the GBDT's LightGBM text)
            bundle.model.save(tmp)
        (tmp / CONFIG_FILE).write_text(json.dumps(bundle.config, indent=2, default=json_default))
        bundle.encoder.save(tmp / ENCODER_FILE)
        (tmp / METRICS_FILE).write_text(json.dumps(bundle.metrics, indent=2, default=json_default))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def load_bundle(folder: str | Path) -> SourceBundle:
    d = Path(folder)
    missing = [f for f in (MODEL_FILE, CONFIG_FILE, ENCODER_FILE) if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d} is not a source bundle: missing {missing}")
    config = json.loads((d / CONFIG_FILE).read_text())
    encoder = FeatureEncoder.load(d / ENCODER_FILE)
    model = build_source_model(config["kind"], encoder, config["model"])
    model.load_state_dict(torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    metrics = json.loads((d / METRICS_FILE).read_text()) if (d / METRICS_FILE).is_file() else {}
    return SourceBundle(model, encoder, config, metrics)


def train_source(
    df: pd.DataFrame,
    schema: Schema,
    kind: str,
    model_config: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    n_boot: int = 200,
    eval_splits: tuple[str, ...] = ("valid", "test"),
) -> SourceBundle:
    """Fit encoders on train, train ``kind`` with early stopping on valid AUC, evaluate ``eval_splits`` with
    user-bootstrap CIs. ``df`` must carry the ``split`` column (``iat.data.split.add_split``).

    Under DDP (``iat.distributed``) every rank passes the whole log: the encoder is fitted on the whole train split
    (the same on every rank), then the rank trains and scores its users' rows, ``cfg.batch_size`` rows per step
    over all ranks."""
    if SPLIT_COLUMN not in df.columns:
        raise ValueError(f"the log has no '{SPLIT_COLUMN}' column: run the time split first (iat.data.split.add_split)")
    cfg = train_cfg or TrainConfig()
    split = df[SPLIT_COLUMN].to_numpy()
    encoder = FeatureEncoder.fit(df[split == "train"], schema)
    rows = dist.shard_rows(df["user_id"].to_numpy(), split == "train")
    frame, split = encoder.transform(df.iloc[rows]), split[rows]
    model = build_source_model(kind, encoder, model_config, seed=cfg.seed)
    bs = dist.local_batch_size(cfg.batch_size)
    train_b = make_batches(model, frame, split, "train", bs, cfg.seed, train=True)
    valid_b = make_batches(model, frame, split, "valid", bs, cfg.seed)
    result = fit(model, train_b, valid_b, cfg, checkpoint_dir)
    metrics: dict[str, Any] = {s: evaluate_model(model, make_batches(model, frame, split, s, bs, cfg.seed), n_boot=n_boot) for s in eval_splits}
    metrics.update(best_epoch=result.best_epoch, history=result.history, samples_per_s=result.samples_per_s, processes=dist.world_size())
    train_dict = asdict(cfg)
    config = {
        "kind": kind,
        "model": model.config,
        "train": train_dict,
        "config_hash": config_hash(kind, model.config, train_dict),
        "version": weights_hash(model),
    }
    return SourceBundle(model, encoder, config, metrics)
