"""LightGBM on the downstream rankers' inputs: the strongest practical baseline, and tokens as features for any model.

The features are read from the same ``iat.history.HistoryAssembler`` batches the neural rankers train on, so a
GBDT row reads exactly what the rankers read, in three input sets (``inputs``):

- ``base``: the request's fields as the base ranker sees them: every categorical field by its encoder index (a
  LightGBM categorical, or a plain number for fields of more than ``max_categories`` values such as user and item
  ids, whose categorical splits overfit: 0.720 vs 0.737 valid AUC on the synthetic log) and every numeric field
  (its encoded value, a monotone transform a tree does not notice);
- ``seq``: ``base`` + tree-readable strict-past aggregates of the base ranker's clicked-item sequence (the user's
  last ``base_L`` clicks before the request): how many, how many of the target's category and of the target item,
  same-category clicks among the last five, time since the last click and the last same-category click;
- ``tokens``: ``seq`` + the user's last L instance tokens pooled three ways: mean, recency-weighted mean (weight
  halves every 8 positions) and the mean over clicked instances (the click is side info the rankers read too),
  plus the token count. Tokens as features of a model that is not ours: the store is a reusable asset.

Training: one booster per (task, seed); a small grid of tree shapes is tried, each with early stopping on the
valid split's AUC, and the best on valid is kept (never tuned on test). ``task='conversion'`` trains on clicked
rows with their conversion labels (pCVR).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iat.features import FeatureEncoder
from iat.models.batching import HIST_INDEX, expand_histories

GBDT_INPUTS = ("base", "seq", "tokens")
GBDT_DEFAULTS: dict[str, Any] = {
    "inputs": "base",
    "max_categories": 200,
    "params": {
        "learning_rate": 0.05,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "cat_smooth": 10.0,
        "cat_l2": 10.0,
        "max_cat_to_onehot": 4,
    },
    # tree shapes tried; the best valid AUC wins (tuned on valid only)
    "grid": [
        {"num_leaves": 31, "min_data_in_leaf": 100},
        {"num_leaves": 127, "min_data_in_leaf": 100},
        {"num_leaves": 15, "min_data_in_leaf": 300, "lambda_l2": 10.0},
    ],
    "max_rounds": 3000,
    "early_stopping": 50,
}
RECENCY_HALF_LIFE = 8  # positions
MODEL_TEXT = "model.txt"


def _config(config: dict[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(GBDT_DEFAULTS))
    if unknown:
        raise ValueError(f"gbdt: unknown config keys {unknown}; known: {sorted(GBDT_DEFAULTS)}")
    out = {**GBDT_DEFAULTS, **config, "params": {**GBDT_DEFAULTS["params"], **config.get("params", {})}}
    if out["inputs"] not in GBDT_INPUTS:
        raise ValueError(f"gbdt: inputs must be one of {GBDT_INPUTS}, got '{out['inputs']}'")
    if not out["grid"]:
        raise ValueError("gbdt: grid must hold at least one tree shape")
    return out


class GBDTRanker:
    """A LightGBM booster over tabular features of assembled ranker batches (``features``)."""

    kind = "gbdt"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None, booster: Any = None):
        self.config = _config(config)
        self.encoder = encoder
        self.booster = booster
        cats = encoder.cat_names
        self._item = cats.index("item_id") if "item_id" in cats else None
        cat_field = encoder.schema.category_column
        self._cat = cats.index(cat_field) if cat_field in cats else None

    @property
    def inputs(self) -> str:
        return str(self.config["inputs"])

    @property
    def reads_tokens(self) -> bool:
        return self.inputs == "tokens"

    # -- features -------------------------------------------------------------------------------------
    def feature_names(self, token_dim: int = 0) -> list[str]:
        """Column names of ``features``; ``cat_`` columns are LightGBM categoricals, ``id_`` ones plain numbers."""
        limit = self.config["max_categories"]
        names = [f"cat_{c}" if k <= limit else f"id_{c}" for c, k in zip(self.encoder.cat_names, self.encoder.cardinalities)]
        names += [f"num_{c}" for c in self.encoder.schema.numeric]
        if self.inputs in ("seq", "tokens"):
            names += ["seq_n", "seq_cat_n", "seq_cat_share", "seq_item_n", "seq_cat_recent5", "seq_last_gap", "seq_cat_last_gap"]
        if self.reads_tokens:
            names += ["tok_n"] + [f"tok_{pool}_{j}" for pool in ("mean", "recent", "clicked") for j in range(token_dim)]
        return names

    def features(self, b: dict[str, torch.Tensor]) -> np.ndarray:
        """[B, n_features] float32 of one assembled batch (``HistoryAssembler.batch``)."""
        parts = [b["cat"].numpy().astype(np.float32), b["num"].numpy()]
        if self.inputs in ("seq", "tokens"):
            parts.append(self._seq_aggregates(expand_histories(b)))  # these compare each row's target with its history
        if self.reads_tokens:
            index = b[HIST_INDEX].numpy() if HIST_INDEX in b else slice(None)
            parts.append(self._token_pools(b)[index])  # the history alone: once per history
        return np.concatenate(parts, axis=1).astype(np.float32)

    def _seq_aggregates(self, b: dict[str, torch.Tensor]) -> np.ndarray:
        mask = b["seq_mask"].numpy()
        n = mask.sum(1)
        B = len(n)
        target_cat = b["cat"].numpy()[:, self._cat] if self._cat is not None else np.zeros(B, np.int64)
        target_item = b["cat"].numpy()[:, self._item] if self._item is not None else np.zeros(B, np.int64)
        # index 0 is the OOV bucket: two unknown values are not a match
        same_cat = mask & (b["seq_cat"].numpy() == target_cat[:, None]) & (target_cat[:, None] > 0)
        same_item = mask & (b["seq_item"].numpy() == target_item[:, None]) & (target_item[:, None] > 0)
        gap = b["seq_gap"].numpy()  # log2 buckets; the newest click sits in the last slot
        big = np.iinfo(np.int64).max
        cat_gap = np.where(same_cat, gap, big).min(1)
        return np.stack(
            [
                n,
                same_cat.sum(1),
                same_cat.sum(1) / np.maximum(n, 1),
                same_item.sum(1),
                same_cat[:, -5:].sum(1),
                np.where(n > 0, gap[:, -1], -1),
                np.where(cat_gap == big, -1, cat_gap),
            ],
            axis=1,
        ).astype(np.float32)

    def _token_pools(self, b: dict[str, torch.Tensor]) -> np.ndarray:
        tok, mask = b["tok"].numpy().astype(np.float32), b["tok_mask"].numpy()
        L = mask.shape[1]
        clicked = mask & (b["tok_click"].numpy() == 2)  # tok_click: pad 0, no click 1, click 2

        def pool(w: np.ndarray) -> np.ndarray:
            return np.einsum("bl,bld->bd", w, tok) / np.maximum(w.sum(1, keepdims=True), 1e-9)

        recency = 0.5 ** ((L - 1 - np.arange(L)) / RECENCY_HALF_LIFE)
        m = mask.astype(np.float32)
        return np.concatenate([m.sum(1, keepdims=True), pool(m), pool(m * recency), pool(clicked.astype(np.float32))], axis=1)

    # -- training and scoring --------------------------------------------------------------------------
    def fit(self, train: tuple[np.ndarray, np.ndarray], valid: tuple[np.ndarray, np.ndarray], names: list[str], seed: int, threads: int = 1) -> dict[str, Any]:
        """Try every tree shape of the grid with early stopping on valid AUC; keep the best. Returns the search."""
        import lightgbm as lgb

        from iat.metrics import auc

        cats = [n for n in names if n.startswith("cat_")]
        dtrain = lgb.Dataset(train[0], train[1], feature_name=names, categorical_feature=cats, free_raw_data=False)
        dvalid = lgb.Dataset(valid[0], valid[1], reference=dtrain)
        search, best = [], None
        for shape in self.config["grid"]:
            params = {"objective": "binary", "metric": "auc", "verbose": -1, "seed": seed, "num_threads": threads, **self.config["params"], **shape}
            t0 = time.perf_counter()
            booster = lgb.train(
                params, dtrain, self.config["max_rounds"], valid_sets=[dvalid],
                callbacks=[lgb.early_stopping(self.config["early_stopping"], verbose=False)],
            )  # fmt: skip
            score = auc(valid[1], booster.predict(valid[0], num_iteration=booster.best_iteration))
            search.append({"shape": shape, "rounds": booster.best_iteration, "valid_auc": score, "seconds": time.perf_counter() - t0})
            if best is None or score > best[0]:
                best = (score, booster, shape)
        assert best is not None
        self.booster = best[1]
        # The chosen shape is in the booster's own text (model.txt); the config stays the spec's, so it reloads.
        return {"search": search, "chosen": {**best[2], "rounds": best[1].best_iteration}}

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        if self.booster is None:
            raise ValueError("gbdt: the model is not trained")
        return self.booster.predict(x, num_iteration=self.booster.best_iteration)

    @property
    def n_leaves(self) -> int:
        if self.booster is None:
            return 0
        return int(sum(t["num_leaves"] for t in self.booster.dump_model()["tree_info"]))

    @property
    def version(self) -> str:
        return hashlib.sha256(self.model_text().encode()).hexdigest()[:12]

    # -- persistence -----------------------------------------------------------------------------------
    def model_text(self) -> str:
        if self.booster is None:
            raise ValueError("gbdt: the model is not trained")
        return self.booster.model_to_string(num_iteration=self.booster.best_iteration)

    def save(self, folder: Path) -> None:
        (folder / MODEL_TEXT).write_text(self.model_text())

    @classmethod
    def load(cls, folder: Path, encoder: FeatureEncoder, config: dict[str, Any]) -> "GBDTRanker":
        import lightgbm as lgb

        path = folder / MODEL_TEXT
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a GBDT ranker bundle: missing {MODEL_TEXT}")
        return cls(encoder, config, lgb.Booster(model_str=path.read_text()))


def stack_features(model: GBDTRanker, batches: Iterable[dict[str, torch.Tensor]], task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, users) over batches, keeping the rows labelled for ``task`` (clicked rows for conversion)."""
    xs, ys, us = [], [], []
    for b in batches:
        y = (b["click"] if task == "click" else b["conversion"]).numpy().astype(np.float64)
        keep = ~np.isnan(y)
        xs.append(model.features(b)[keep])
        ys.append(y[keep].astype(np.int8))
        us.append(b["user_id"].numpy()[keep])
    if not xs:
        raise ValueError("gbdt: no batches to read")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(us)

