"""Downstream training: one ranking model over a split log, its histories read from a token store.

A ``DownstreamSpec`` names the model (``ranker`` with a base sequence module and optional F_iat, or
``sif_mixer`` over HGAQ codes), its config, the token store it reads (None: base model, no tokens) and the
history lengths. ``train_downstream`` fits it on the train split with early stopping on valid and scores
valid and test. The histories come from ``iat.history`` and never hold a token at or after the request ts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from iat import distributed as dist
from iat.features import FeatureEncoder
from iat.history import ClickIndex, HistoryAssembler
from iat.models.batching import RowBatches
from iat.models.hgaq import HGAQTokenizer
from iat.models.registry import CONFIG_FILE, ENCODER_FILE, METRICS_FILE, MODEL_FILE, config_hash, save_bundle, weights_hash
from iat.models.ranker import Ranker
from iat.models.sif_mixer import SIFMixer
from iat.schema import SPLIT_COLUMN, Schema
from iat.tokens.store import TokenStore
from iat.train import TrainConfig, evaluate_model, fit, seed_everything

MODEL_KINDS = ("ranker", "sif_mixer")
RANKER_FILES = (MODEL_FILE, CONFIG_FILE, ENCODER_FILE)


@dataclass
class DownstreamSpec:
    name: str
    model: str = "ranker"
    config: dict[str, Any] = field(default_factory=dict)
    tokens: str | None = None  # which token store (a key of the stores given to the runner); None = no tokens
    L: int = 64  # instance-token history length
    base_L: int = 32  # clicked-item behaviour sequence length

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"spec '{self.name}': model must be one of {MODEL_KINDS}, got '{self.model}'")
        if self.model == "sif_mixer" and self.tokens is None:
            raise ValueError(f"spec '{self.name}': the SIF-Mixer needs an HGAQ token store")
        if (self.config.get("iat") is not None) != (self.tokens is not None) and self.model == "ranker":
            raise ValueError(f"spec '{self.name}': a ranker reads tokens exactly when it has an F_iat (config 'iat')")


@dataclass
class DownstreamData:
    """What every spec on one log shares: the encoder (fitted on train), the encoded rows, the click index."""

    df: pd.DataFrame
    encoder: FeatureEncoder
    split: np.ndarray
    clicks: ClickIndex

    @classmethod
    def prepare(cls, df: pd.DataFrame, schema: Schema) -> "DownstreamData":
        if SPLIT_COLUMN not in df.columns:
            raise ValueError(f"the log has no '{SPLIT_COLUMN}' column: run the time split first")
        split = df[SPLIT_COLUMN].to_numpy()
        encoder = FeatureEncoder.fit(df[split == "train"], schema)
        clicks = ClickIndex.from_frame(df, schema.category_column)
        return cls(df, encoder, split, clicks)


def build_model(spec: DownstreamSpec, encoder: FeatureEncoder, store: TokenStore | None, tokenizer: HGAQTokenizer | None) -> nn.Module:
    if spec.model == "sif_mixer":
        if tokenizer is None or store is None or store.kind != "codes":
            raise ValueError(f"spec '{spec.name}': the SIF-Mixer needs the HGAQ tokenizer and its code store")
        return SIFMixer(tokenizer, {**spec.config, "max_len": max(spec.L, spec.config.get("max_len", 0))})
    cfg = dict(spec.config)
    if store is not None:
        if store.kind != "dense":
            raise ValueError(f"spec '{spec.name}': the ranker's F_iat reads dense tokens, store holds '{store.kind}'")
        cfg["token_dim"] = int(store.dims[0])
    return Ranker(encoder, cfg)


@dataclass
class RankerBundle:
    """A trained downstream model with what serving needs to rebuild and feed it (same folder layout as a
    source bundle: model.pt, config.json, encoder.json, metrics.json)."""

    model: nn.Module
    encoder: FeatureEncoder
    config: dict[str, Any]  # kind, spec, model (full model config), tokenizer (SIF only), token_source, train, config_hash, version
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> DownstreamSpec:
        return DownstreamSpec(**self.config["spec"])


def save_ranker(bundle: RankerBundle, folder: str | Path) -> Path:
    return save_bundle(bundle, folder)  # type: ignore[arg-type]  # same four files, written atomically


def load_ranker(folder: str | Path) -> RankerBundle:
    d = Path(folder)
    missing = [f for f in RANKER_FILES if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d} is not a ranker bundle: missing {missing}")
    config = json.loads((d / CONFIG_FILE).read_text())
    encoder = FeatureEncoder.load(d / ENCODER_FILE)
    if config["kind"] == "sif_mixer":
        model: nn.Module = SIFMixer(HGAQTokenizer(encoder, config["tokenizer"]), config["model"])
    else:
        model = Ranker(encoder, config["model"])
    model.load_state_dict(torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    metrics = json.loads((d / METRICS_FILE).read_text()) if (d / METRICS_FILE).is_file() else {}
    return RankerBundle(model, encoder, config, metrics)


def train_downstream(
    data: DownstreamData,
    spec: DownstreamSpec,
    store: TokenStore | None,
    cfg: TrainConfig,
    tokenizer: HGAQTokenizer | None = None,
    n_boot: int = 0,
    eval_splits: tuple[str, ...] = ("valid", "test"),
    task: str = "click",
) -> tuple[RankerBundle, dict[str, Any]]:
    """Train ``spec`` on the train split; returns the bundle (best valid epoch) and its metrics per split.

    ``task``: what the valid-split model selection and the metrics score, ``click`` (pCTR) or ``conversion``
    (pCVR on clicked rows); the model always trains both heads.

    Under DDP (``iat.distributed``) every rank passes the same ``data`` and trains and scores its users' rows,
    ``cfg.batch_size`` rows per step over all ranks; histories come from the whole log, as with one process."""
    seed_everything(cfg.seed)
    model = build_model(spec, data.encoder, store, tokenizer)
    assembler = HistoryAssembler(data.encoder, store, data.clicks, L=spec.L, base_L=spec.base_L)
    mine = np.zeros(len(data.df), bool)
    mine[dist.shard_rows(data.df["user_id"].to_numpy(), data.split == "train")] = True
    bs = dist.local_batch_size(cfg.batch_size)

    def source(split: str, train: bool) -> RowBatches:
        frame = data.encoder.transform(data.df.iloc[np.flatnonzero((data.split == split) & mine)])
        return RowBatches(frame, bs, cfg.seed, "shuffle" if train else "time", assemble=assembler.batch)

    result = fit(model, source("train", True), source("valid", False), cfg, task=task)
    metrics: dict[str, Any] = {s: evaluate_model(model, source(s, False), n_boot=n_boot, seed=cfg.seed, task=task) for s in eval_splits}
    metrics.update(
        spec=asdict(spec),
        task=task,
        best_epoch=result.best_epoch,
        samples_per_s=result.samples_per_s,
        processes=dist.world_size(),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    train = asdict(cfg)
    config = {
        "kind": spec.model,
        "spec": asdict(spec),
        "model": model.config,
        "tokenizer": model.tokenizer.config if isinstance(model, SIFMixer) else None,
        "token_source": store.source if store is not None else None,
        "train": train,
        "config_hash": config_hash(spec.model, {"spec": asdict(spec), "model": model.config}, train),
        "version": weights_hash(model),
    }
    return RankerBundle(model, data.encoder, config, metrics), metrics
