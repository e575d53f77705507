"""Scorers (arms) for the A/B simulator, built from a short spec so a pipeline config can name them.

Specs: ``random`` (a fair coin per candidate: the floor), ``column:<name>`` (rank by one feature, e.g.
``column:item_prior_ctr``: a popularity heuristic), ``logreg`` / ``temporal`` (the logistic-regression baseline or
the temporal source model's click head, trained here on the pre-experiment log). Any model with
``predict(batch) -> {"p": ...}`` and its fitted ``FeatureEncoder`` becomes a scorer with ``model_scorer``.
``ranker:base`` / ``ranker:iat[:<source kind>]``: the downstream rankers (base vs +IAT), trained here too, reading
histories that grow with their arm's impressions (``iat.abtest_rankers``). ``make_scorers`` builds both arms
with one ``RankerTraining``, so two ranker arms share the split, the encoder and the source model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from iat.abtest import Scorer
from iat.abtest_rankers import PREFIX as RANKER_PREFIX
from iat.abtest_rankers import RankerTraining, parse_ranker_spec
from iat.features import FeatureEncoder
from iat.models.batching import RowBatches, frame_batch
from iat.schema import Schema

TRAINABLE = ("logreg", "temporal")


def random_scorer(seed: int = 0) -> Scorer:
    rng = np.random.default_rng(seed)
    return lambda rows: rng.random(len(rows))


def column_scorer(column: str) -> Scorer:
    def score(rows: pd.DataFrame) -> np.ndarray:
        if column not in rows.columns:
            raise ValueError(f"column scorer: candidate rows have no column '{column}'")
        return rows[column].to_numpy(np.float64)

    return score


def model_scorer(model: torch.nn.Module, encoder: FeatureEncoder, batch_size: int = 8192) -> Scorer:
    """pCTR of any model with ``predict(batch)["p"]`` over rows encoded by its ``encoder``."""

    def score(rows: pd.DataFrame) -> np.ndarray:
        enc = encoder.transform(rows.assign(click=0))  # labels are not known at scoring time; the model ignores them
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(enc), batch_size):
                batch = frame_batch(enc.take(np.arange(start, min(start + batch_size, len(enc)))))
                out.append(model.predict(batch)["p"].numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return score


def train_model_scorer(kind: str, history: pd.DataFrame, schema: Schema, seed: int = 0, epochs: int = 1, config: dict[str, Any] | None = None) -> Scorer:
    """Fit a ``logreg`` or ``temporal`` model on ``history`` (last 10% of its time range validates) -> scorer."""
    from iat.models.logreg import LogRegModel
    from iat.models.temporal import TemporalSourceModel
    from iat.train import TrainConfig, fit

    if kind not in TRAINABLE:
        raise ValueError(f"trainable scorer kind '{kind}' is not one of {TRAINABLE}")
    cut = history["ts"].quantile(0.9)
    train, valid = history[history["ts"] < cut], history[history["ts"] >= cut]
    if len(train) == 0 or len(valid) == 0 or valid["click"].nunique() < 2:
        raise ValueError(f"history of {len(history)} rows is too small to train a '{kind}' scorer")
    encoder = FeatureEncoder.fit(train, schema)
    model = LogRegModel(encoder) if kind == "logreg" else TemporalSourceModel(encoder, config)
    cfg = TrainConfig(epochs=epochs, seed=seed, progress=False, patience=0)
    fit(model, RowBatches(encoder.transform(train), cfg.batch_size, seed), RowBatches(encoder.transform(valid), 8192, seed), cfg)
    return model_scorer(model, encoder)


def make_scorer(spec: str, history: pd.DataFrame | None = None, schema: Schema | None = None, seed: int = 0, rankers: RankerTraining | None = None) -> Scorer:
    """A scorer from its spec (see the module docstring). ``rankers``: the training that ranker specs share
    (a new one on ``history`` when None)."""
    if spec == "random":
        return random_scorer(seed)
    if spec.startswith("column:"):
        return column_scorer(spec.split(":", 1)[1])
    if spec not in TRAINABLE and not spec.startswith(RANKER_PREFIX):
        raise ValueError(f"unknown scorer spec '{spec}': expected random, column:<name>, ranker:base, ranker:iat[:<source kind>] or one of {TRAINABLE}")
    if spec.startswith(RANKER_PREFIX):
        parse_ranker_spec(spec)  # a bad ranker spec fails before any training
    if history is None or schema is None:
        raise ValueError(f"scorer '{spec}' is trained on the pre-experiment log: pass history and schema")
    if spec in TRAINABLE:
        return train_model_scorer(spec, history, schema, seed)
    return (rankers or RankerTraining(history, schema, seed)).scorer(spec, seed)


def make_scorers(
    specs: tuple[str, ...], history: pd.DataFrame, schema: Schema, seed: int = 0, rankers: RankerTraining | None = None, progress: bool = False
) -> list[Scorer]:
    """One scorer per spec (arm i gets seed ``seed + i``); ranker specs share one ``RankerTraining``."""
    if rankers is None and any(s.startswith(RANKER_PREFIX) for s in specs):
        rankers = RankerTraining(history, schema, seed, progress=progress)
    return [make_scorer(spec, history, schema, seed + i, rankers) for i, spec in enumerate(specs)]
