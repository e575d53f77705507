"""Downstream training: one ranking model over a split log, its histories read from a token store.

A ``DownstreamSpec`` names the model (``ranker`` with a base sequence module and optional F_iat, ``sif_mixer``
over HGAQ codes, or ``gbdt``: LightGBM on the rankers' inputs, ``iat.models.gbdt``), its config, the token store
it reads (None: no tokens) and the history lengths. ``train_downstream`` fits it on the train split with model
selection on valid and scores valid and test. The histories come from ``iat.history`` and never hold a token at
or after the request ts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
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
from iat.models.gbdt import GBDTRanker, stack_features
from iat.models.hgaq import HGAQTokenizer
from iat.models.registry import CONFIG_FILE, ENCODER_FILE, METRICS_FILE, MODEL_FILE, config_hash, save_bundle, weights_hash
from iat.models.ranker import Ranker
from iat.models.sif_mixer import SIFMixer
from iat.schema import SPLIT_COLUMN, Schema
from iat.tokens.store import TokenStore
from iat.train import TrainConfig, evaluate_model, evaluate_segments, fit, seed_everything

MODEL_KINDS = ("ranker", "sif_mixer", "gbdt")
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
        if self.model == "gbdt" and (self.config.get("inputs") == "tokens") != (self.tokens is not None):
            raise ValueError(f"spec '{self.name}': a GBDT reads tokens exactly when its inputs are 'tokens'")


@dataclass
class DownstreamData:
    """What every spec on one log shares: the encoder (fitted on train), the encoded rows, the click index."""

    df: pd.DataFrame
    encoder: FeatureEncoder
    split: np.ndarray
    clicks: ClickIndex

    @cached_property
    def train_users(self) -> np.ndarray:
        """Users with train rows: the "returning" users of the valid / test splits (the others are new)."""
        return np.unique(self.df["user_id"].to_numpy()[self.split == "train"])

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
    source bundle: model.pt, config.json, encoder.json, metrics.json; a GBDT keeps model.txt instead of model.pt)."""

    model: nn.Module | GBDTRanker
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
    config = json.loads((d / CONFIG_FILE).read_text()) if (d / CONFIG_FILE).is_file() else {}
    needed = (CONFIG_FILE, ENCODER_FILE) if config.get("kind") == "gbdt" else RANKER_FILES
    missing = [f for f in needed if not (d / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{d} is not a ranker bundle: missing {missing}")
    encoder = FeatureEncoder.load(d / ENCODER_FILE)
    metrics = json.loads((d / METRICS_FILE).read_text()) if (d / METRICS_FILE).is_file() else {}
    if config["kind"] == "gbdt":
        return RankerBundle(GBDTRanker.load(d, encoder, config["model"]), encoder, config, metrics)
    if config["kind"] == "sif_mixer":
        model: nn.Module = SIFMixer(HGAQTokenizer(encoder, config["tokenizer"]), config["model"])
    else:
        model = Ranker(encoder, config["model"])
    model.load_state_dict(torch.load(d / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
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
    if spec.model == "gbdt":
        return train_gbdt(data, spec, store, cfg, n_boot, eval_splits, task)
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
    metrics: dict[str, Any] = {s: evaluate_model(model, source(s, False), n_boot=n_boot, seed=cfg.seed, task=task, returning_users=data.train_users) for s in eval_splits}
    metrics.update(
        spec=asdict(spec),
        task=task,
        best_epoch=result.best_epoch,
        samples_per_s=result.samples_per_s,
        processes=dist.world_size(),
        params=sum(p.numel() for p in model.parameters() if p.requires_grad),
    )
    tokenizer_config = model.tokenizer.config if isinstance(model, SIFMixer) else None
    config = _bundle_config(spec, model.config, cfg, store, weights_hash(model), tokenizer_config)
    return RankerBundle(model, data.encoder, config, metrics), metrics


def _bundle_config(
    spec: DownstreamSpec, model_config: dict[str, Any], cfg: TrainConfig, store: TokenStore | None, version: str, tokenizer: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A downstream bundle's config.json: what serving needs to rebuild the model and the store it reads."""
    train = asdict(cfg)
    return {
        "kind": spec.model,
        "spec": asdict(spec),
        "model": model_config,
        "tokenizer": tokenizer,
        "token_source": store.source if store is not None else None,
        "train": train,
        "config_hash": config_hash(spec.model, {"spec": asdict(spec), "model": model_config}, train),
        "version": version,
    }


def train_gbdt(
    data: DownstreamData,
    spec: DownstreamSpec,
    store: TokenStore | None,
    cfg: TrainConfig,
    n_boot: int = 0,
    eval_splits: tuple[str, ...] = ("valid", "test"),
    task: str = "click",
) -> tuple[RankerBundle, dict[str, Any]]:
    """A LightGBM spec: features from the rankers' own batches, tree shape chosen on valid, scored like a ranker."""
    if dist.world_size() > 1:
        raise ValueError(f"spec '{spec.name}': a GBDT trains in one process (LightGBM threads), not under DDP")
    if store is not None and store.kind != "dense":
        raise ValueError(f"spec '{spec.name}': a GBDT pools dense tokens, store holds '{store.kind}'")
    model = GBDTRanker(data.encoder, spec.config)
    assembler = HistoryAssembler(data.encoder, store if model.reads_tokens else None, data.clicks, L=spec.L, base_L=spec.base_L)

    def rows(split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        frame = data.encoder.transform(data.df.iloc[np.flatnonzero(data.split == split)])
        return stack_features(model, RowBatches(frame, 4096, cfg.seed, "time", assemble=assembler.batch).batches(0), task)

    t0 = time.perf_counter()
    parts = {s: rows(s) for s in dict.fromkeys(("train", "valid", *eval_splits))}
    names = model.feature_names(int(store.dims[0]) if model.reads_tokens and store is not None else 0)
    search = model.fit(parts["train"][:2], parts["valid"][:2], names, cfg.seed, cfg.threads or 1)
    seconds = time.perf_counter() - t0
    metrics: dict[str, Any] = {}
    for s in eval_splits:
        x, y, users = parts[s]
        metrics[s] = evaluate_segments(y, model.predict_features(x), users, n_boot, cfg.seed, data.train_users)
    metrics.update(
        spec=asdict(spec),
        task=task,
        best_epoch=int(search["chosen"]["rounds"]),
        samples_per_s=len(parts["train"][1]) / max(seconds, 1e-9),
        processes=1,
        params=model.n_leaves,
        search=search["search"],
        chosen=search["chosen"],
    )
    config = _bundle_config(spec, model.config, cfg, store if model.reads_tokens else None, model.version)
    return RankerBundle(model, data.encoder, config, metrics), metrics
