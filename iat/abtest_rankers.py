"""The downstream rankers as A/B arms: control = the base ranker, treatment = the ranker with IAT tokens.

Specs: ``ranker:base`` (clicked-item sequence only: DIN) and ``ranker:iat`` / ``ranker:iat:<source kind>``
(the same plus a Transformer F_iat over the user's last L instance tokens; source model ``user_order`` by
default, or ``temporal``). ``RankerTraining`` trains them on the pre-experiment log: time split, then (for
+IAT) a source model and its token store, then the ranker. Arms built from one ``RankerTraining`` share its
split, encoder and source models, so ``ranker:base`` vs ``ranker:iat`` differ in the tokens alone and an
A/A test of ``ranker:iat`` trains one source model.

An arm reads histories as serving does (``HistoryAssembler``): the base sequence from a clicked-item index,
the tokens from its own copy of the store, both strictly before the candidate's ts. ``observe`` (the
simulator's hook, called with the arm's shown impressions after each time block) encodes those impressions
with the source model and appends them to the arm's store and click index, so the arm's next requests see
them; arms never see each other's impressions. The simulator draws no conversion delay (its rows carry no
``conversion_ts``), so appended tokens carry click labels but no conversion label (read as "not known yet").
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iat.data.split import add_split
from iat.downstream import DownstreamData, DownstreamSpec, RankerBundle, train_downstream
from iat.history import ClickIndex, HistoryAssembler
from iat.models.registry import SourceBundle, train_source
from iat.schema import Schema
from iat.serving_package import check_compatible, snapshot_store
from iat.tokens.materialize import encode_instances, materialize
from iat.tokens.store import TokenStore
from iat.train import TrainConfig

PREFIX = "ranker:"
TOKEN_SOURCES = ("user_order", "temporal")  # source models of dense tokens (the ranker's F_iat reads dense tokens)
BASE_SPEC = DownstreamSpec("base-din", config={"seq": "din"})
IAT_L = 32
MAX_PARTS = 16  # appended segments before an arm's store is compacted (fetch merges every part)


def parse_ranker_spec(spec: str) -> str | None:
    """The token source kind of a ranker spec: None for ``ranker:base``, a kind for ``ranker:iat[:<kind>]``."""
    parts = spec.split(":")
    if parts[0] + ":" != PREFIX or len(parts) < 2 or parts[1] not in ("base", "iat") or len(parts) > (2 if parts[1] == "base" else 3):
        raise ValueError(f"ranker spec '{spec}': expected ranker:base, ranker:iat or ranker:iat:<source kind>")
    if parts[1] == "base":
        return None
    kind = parts[2] if len(parts) == 3 else TOKEN_SOURCES[0]
    if kind not in TOKEN_SOURCES:
        raise ValueError(f"ranker spec '{spec}': source kind '{kind}' does not make dense tokens; expected one of {TOKEN_SOURCES}")
    return kind


class RankerScorer:
    """A trained ranker scoring candidate rows with histories that grow with the arm's own impressions."""

    def __init__(
        self,
        bundle: RankerBundle,
        store: TokenStore | None,
        source: SourceBundle | None,
        history: pd.DataFrame,
        store_dir: Path | None = None,
        batch_size: int = 4096,
    ):
        spec = bundle.spec
        if (spec.tokens is None) != (store is None):
            raise ValueError(f"ranker '{spec.name}': pass a token store exactly when the ranker reads tokens (spec.tokens={spec.tokens!r})")
        self.bundle, self.source, self.batch_size = bundle, source, batch_size
        self.category_column = bundle.encoder.schema.category_column
        self.store: TokenStore | None = None
        if store is not None:
            if source is None:
                raise ValueError(f"ranker '{spec.name}' reads tokens: it needs the source bundle that encodes new impressions")
            check_compatible(bundle, source, store.source, str(store.root))
            if store_dir is None:  # the copy lives as long as this arm
                self._tmp = tempfile.TemporaryDirectory(prefix="iat-ab-arm-")
                store_dir = Path(self._tmp.name) / "store"
            self.store = TokenStore.open(snapshot_store(store.root, store_dir))
        self._clicked = self._clicked_rows(history)
        self._rebuild(clicks=True)

    def _clicked_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The clicked rows, only the columns the click index reads."""
        cols = ["user_id", "ts", "instance_id", "item_id", "click"] + ([self.category_column] if self.category_column else [])
        return rows.loc[rows["click"].to_numpy() == 1, cols]

    def _rebuild(self, clicks: bool) -> None:
        if clicks:
            self.clicks = ClickIndex.from_frame(self._clicked, self.category_column)
        spec = self.bundle.spec
        self.assembler = HistoryAssembler(self.bundle.encoder, self.store, self.clicks, L=spec.L, base_L=spec.base_L)

    @torch.no_grad()
    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        enc = self.bundle.encoder.transform(rows.assign(click=0))  # labels are unknown at scoring time; the model ignores them
        model = self.bundle.model.eval()
        out = []
        for s in range(0, len(enc), self.batch_size):
            batch = self.assembler.batch(enc.take(np.arange(s, min(s + self.batch_size, len(enc)))))
            out.append(model.predict(batch)["p"].numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def observe(self, rows: pd.DataFrame) -> None:
        """Append the arm's shown impressions (with their drawn clicks) to what its next requests read."""
        if len(rows) == 0:
            return
        new = self._clicked_rows(rows)
        if len(new):
            self._clicked = pd.concat([self._clicked, new], ignore_index=True)
        if self.store is not None:
            assert self.source is not None
            self.store = self.store.append(
                user_id=rows["user_id"], ts=rows["ts"], instance_id=rows["instance_id"], domain=rows["domain"], item_id=rows["item_id"],
                category=rows[self.category_column] if self.category_column else None, click=rows["click"],
                conversion=None, conversion_ts=None,  # no conversion_ts from the simulator: the label is never shown as known
                tokens=encode_instances(self.source, rows, progress=False),
            )  # fmt: skip
            if len(self.store.parts) > MAX_PARTS:
                self.store = self.store.compact()
        self._rebuild(clicks=len(new["ts"]) > 0)


def ranker_scorer(
    bundle: RankerBundle, store: TokenStore | None, source: SourceBundle | None, history: pd.DataFrame, store_dir: Path | None = None
) -> RankerScorer:
    """An A/B arm of a trained ranker. ``history``: the log the arm starts from (its clicks seed the base
    sequence); ``store``: the ranker's token store (None for a base ranker), copied to ``store_dir`` (a new
    folder; a temporary one by default) so the arm appends to its own copy; ``source``: the model that made the
    store's tokens (encodes new impressions)."""
    return RankerScorer(bundle, store, source, history, store_dir)


@dataclass
class RankerTraining:
    """Trains ranker arms on one pre-experiment log, sharing the split, the encoder and each source model.

    Source models and stores are trained once per kind (seed ``seed``); each ranker with its arm's seed.
    The training stores live in a temporary folder removed with this object (arms hold their own copies).
    """

    history: pd.DataFrame
    schema: Schema
    seed: int = 0
    epochs: int = 2
    batch_size: int = 1024
    progress: bool = False
    sources: dict[str, tuple[SourceBundle, TokenStore]] = field(default_factory=dict, init=False)
    _data: DownstreamData | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] = field(default_factory=lambda: tempfile.TemporaryDirectory(prefix="iat-ab-rankers-"), init=False, repr=False)

    @property
    def workdir(self) -> Path:
        return Path(self._tmp.name)

    def _train_cfg(self, seed: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=seed, threads=1, progress=self.progress)

    def data(self) -> DownstreamData:
        if self._data is None:
            self._data = DownstreamData.prepare(add_split(self.history), self.schema)
        return self._data

    def source(self, kind: str) -> tuple[SourceBundle, TokenStore]:
        """The source model of ``kind`` trained on the history's train split, and its tokens of every history row."""
        if kind not in self.sources:
            df = self.data().df
            bundle = train_source(df, self.schema, kind, None, self._train_cfg(self.seed), n_boot=0, eval_splits=("test",))
            store = TokenStore.open(materialize(bundle, df, self.workdir / f"tokens-{kind}", progress=self.progress))
            self.sources[kind] = (bundle, store)
        return self.sources[kind]

    def scorer(self, spec: str, seed: int) -> RankerScorer:
        """Train the ranker that ``spec`` names (seed ``seed``) and wrap it as an arm (with its own store copy)."""
        kind = parse_ranker_spec(spec)
        source, store = self.source(kind) if kind is not None else (None, None)
        ds = BASE_SPEC if kind is None else DownstreamSpec(f"u-iat-din-{kind}", config={"seq": "din", "iat": "transformer"}, tokens=kind, L=IAT_L)
        bundle, _ = train_downstream(self.data(), ds, store, self._train_cfg(seed), eval_splits=("test",))
        return ranker_scorer(bundle, store, source, self.history)  # each arm copies the store into its own folder
