"""Turn an instance log into arrays a model reads, with encoders fitted on the train split only.

Categorical fields: a vocabulary of values seen at least ``min_count`` times in train; index 0 is the
OOV bucket (unseen, rare or null values), so serving never fails on a new id. Numeric fields: signed
log1p, then standardised with train statistics (NaN -> 0), plus a quantile bucket id so a model can
embed a numeric field like a categorical one. ``domain`` is always a context field.
The fitted encoder is JSON, saved with every model and reused at serving time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iat.schema import GROUPS, Schema

N_BUCKETS = 16
DOMAIN_FIELD = "domain"
# Up to this many values, a categorical field is encoded by a dict lookup per value: pandas' fixed cost per call
# (about 0.2 ms) was a third of a 100-candidate rank request over 27 fields. Both give the same codes (Python
# equality and hashing, as pandas' object hash table uses; tests/test_features.py checks the two agree). Bools, as
# values or in the vocabulary, stay with pandas: whether it matches True to 1 depends on the rest of the array.
DICT_LOOKUP_ROWS = 2_048
_BOOLS = (bool, np.bool_)


@dataclass(frozen=True)
class Field:
    name: str
    group: str
    type: str  # categorical | numeric
    column: int  # index into EncodedFrame.cat (categorical) or EncodedFrame.num (numeric)


@dataclass
class EncodedFrame:
    """One encoded split; row i of every array is the same instance."""

    cat: np.ndarray  # [N, n_cat] int64 vocabulary indices (0 = OOV)
    num: np.ndarray  # [N, n_num] float32 standardised values
    num_bucket: np.ndarray  # [N, n_num] int64 quantile buckets (0..N_BUCKETS-1)
    click: np.ndarray  # [N] float32
    conversion: np.ndarray  # [N] float32, NaN where there is none (not clicked)
    user_id: np.ndarray  # [N] int64
    item_id: np.ndarray  # [N] int64
    ts: np.ndarray  # [N] int64
    instance_id: np.ndarray  # [N] int64
    domain: np.ndarray  # [N] int64 domain vocabulary index

    def __len__(self) -> int:
        return len(self.click)

    def take(self, idx: np.ndarray) -> "EncodedFrame":
        return EncodedFrame(**{k: v[idx] for k, v in self.__dict__.items()})


class FeatureEncoder:
    """Vocabularies and numeric statistics of one schema, fitted on train."""

    def __init__(self, schema: Schema, vocabs: dict[str, list[Any]], num_stats: dict[str, dict[str, Any]]):
        self.schema = schema
        self.vocabs = vocabs
        self.num_stats = num_stats
        self._index = {k: pd.Index(v) for k, v in vocabs.items()}
        self._codes = {k: {x: i + 1 for i, x in enumerate(v)} for k, v in vocabs.items() if not any(type(x) in _BOOLS for x in v)}
        cat_names = [DOMAIN_FIELD] + schema.categorical
        fields = [Field(DOMAIN_FIELD, "context", "categorical", 0)]
        fields += [Field(n, f.group, "categorical", cat_names.index(n)) for f in schema.features if (n := f.name) in schema.categorical]
        fields += [Field(f.name, f.group, "numeric", i) for i, f in enumerate(f for f in schema.features if f.type == "numeric")]
        # Fields ordered by group (user, item, context, cross): HGAQ chunks consecutive fields of a group.
        self.fields: list[Field] = sorted(fields, key=lambda f: GROUPS.index(f.group))
        self.cat_names = cat_names

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, train: pd.DataFrame, schema: Schema, min_count: int = 2) -> "FeatureEncoder":
        if len(train) == 0:
            raise ValueError("cannot fit feature encoders on an empty train split")
        vocabs: dict[str, list[Any]] = {}
        for name in [DOMAIN_FIELD] + schema.categorical:
            counts = train[name].dropna().value_counts(sort=False)
            keep = counts[counts >= (1 if name == DOMAIN_FIELD else min_count)].index
            vocabs[name] = sorted(keep.tolist(), key=lambda v: (str(type(v)), v))
        num_stats: dict[str, dict[str, Any]] = {}
        for name in schema.numeric:
            x = _slog(train[name].to_numpy(np.float64))
            x = x[np.isfinite(x)]
            mean, std = (float(x.mean()), float(x.std()) or 1.0) if len(x) else (0.0, 1.0)
            edges = np.unique(np.quantile(x, np.linspace(0, 1, N_BUCKETS + 1)[1:-1])) if len(x) else np.array([])
            num_stats[name] = {"mean": mean, "std": std, "edges": edges.tolist()}
        return cls(schema, vocabs, num_stats)

    # -- transform -----------------------------------------------------------------------------
    @property
    def cardinalities(self) -> list[int]:
        """Rows of each categorical field's embedding table (vocabulary + OOV), in ``cat`` column order."""
        return [len(self.vocabs[n]) + 1 for n in self.cat_names]

    @property
    def n_num(self) -> int:
        return len(self.schema.numeric)

    def encode_categorical(self, name: str, values: pd.Series | np.ndarray) -> np.ndarray:
        codes = self._codes.get(name)
        if codes is not None and len(values) <= DICT_LOOKUP_ROWS and not any(type(v) in _BOOLS for v in values):
            return np.fromiter((codes.get(v, 0) for v in values), np.int64, len(values))  # unknown -> 0 (OOV)
        return self._index[name].get_indexer(pd.Series(values)) + 1  # -1 (unknown) -> 0 (OOV)

    def transform(self, df: pd.DataFrame) -> EncodedFrame:
        missing = [c for c in self.cat_names + self.schema.numeric if c not in df.columns]
        if missing:
            raise ValueError(f"cannot encode: missing columns {missing}")
        n = len(df)
        cat = np.stack([self.encode_categorical(c, df[c]) for c in self.cat_names], axis=1) if n else np.zeros((0, len(self.cat_names)), np.int64)
        nums, buckets = [], []
        for name in self.schema.numeric:
            st = self.num_stats[name]
            x = _slog(pd.to_numeric(df[name], errors="coerce").to_numpy(np.float64))
            buckets.append(np.searchsorted(np.asarray(st["edges"]), np.nan_to_num(x, nan=st["mean"])))
            z = np.clip((x - st["mean"]) / st["std"], -6, 6)
            nums.append(np.nan_to_num(z, nan=0.0, posinf=6.0, neginf=-6.0))
        num = np.stack(nums, axis=1).astype(np.float32) if nums else np.zeros((n, 0), np.float32)
        bucket = np.stack(buckets, axis=1).astype(np.int64) if buckets else np.zeros((n, 0), np.int64)
        conv = df["conversion"].to_numpy(np.float32, na_value=np.nan) if "conversion" in df.columns else np.full(n, np.nan, np.float32)
        return EncodedFrame(
            cat=cat.astype(np.int64),
            num=num,
            num_bucket=bucket,
            click=df["click"].to_numpy(np.float32),
            conversion=conv,
            user_id=df["user_id"].to_numpy(np.int64),
            item_id=df["item_id"].to_numpy(np.int64),
            ts=df["ts"].to_numpy(np.int64),
            instance_id=df["instance_id"].to_numpy(np.int64),
            domain=cat[:, 0].astype(np.int64),
        )

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema.to_dict(), "vocabs": self.vocabs, "num_stats": self.num_stats}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureEncoder":
        return cls(Schema.from_dict(d["schema"]), d["vocabs"], d["num_stats"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), default=json_default))

    @classmethod
    def load(cls, path: str | Path) -> "FeatureEncoder":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _slog(x: np.ndarray) -> np.ndarray:
    """Signed log1p: tames heavy-tailed counts and prices, keeps sign and order."""
    return np.sign(x) * np.log1p(np.abs(x))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for what bundles and encoders hold besides plain values: numpy scalars, paths."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
