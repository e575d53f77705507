"""The ranking service without a web framework: load a serving package once, then rank, ingest and label.

- ``rank`` / ``score_queries``: a query is (user, request ts, domain, context features, candidates with their
  item features). Each candidate becomes one row with the schema's columns: the candidate's item (and
  candidate-specific cross) features, the query's user / context / cross features. Cross features arrive
  with the request, as from a feature service: the core never computes them. A feature left out is null:
  OOV for a categorical field, 0 after standardisation for a numeric one. Rows are encoded with the ranker's
  FeatureEncoder, histories come from the token store through ``HistoryAssembler`` (the same code that fed
  training; fetched once per distinct (user, ts) and shared by that request's candidates, whose scores compute
  every history-side term once too), and ``model.predict`` scores them: pCTR, and pCVR = P(conversion | click).
- ``ingest``: one newly logged instance -> the source model's token -> appended to the store (the paper's
  streaming write path); the next rank of that user sees it. ``label``: a delayed conversion arrives.

Reads take one immutable view (store snapshot, clicked-item index, assembler) and never lock; writes are
serialised, publish a new view, and keep the clicked-item index up to date incrementally (an insert into
sorted arrays: O(clicked rows) copying, no store scan). The store's own append checks every instance id for
duplicates (O(store) per append) and each append adds a part, so after ``max_parts`` parts the store is
compacted (O(store)); both are fine at demo scale and are what to replace (batched appends) beyond it.
A view notices writes by other processes (more workers, other replicas on a shared volume) through the
manifest's stat and reloads.

With an online store (``online=`` a Redis URL; the service's ``IAT_ONLINE_STORE``) every replica reads and writes
the one live store on Redis (``iat.tokens.online``): ingests and labels are atomic scripts there, visible to the
next fetch of every replica, with no part files, no compaction and no O(store) duplicate check. The view then
only follows the live version (a newly published store) and the domain vocabulary. An empty Redis is seeded from
the package's snapshot on first start.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from iat.downstream import RankerBundle, load_ranker
from iat.distributed import to_device
from iat.features import DOMAIN_FIELD
from iat.history import ClickIndex, HistoryAssembler
from iat.models.batching import HIST_INDEX
from iat.model_names import is_post_sit
from iat.models.registry import SourceBundle, load_bundle
from iat.schema import Feature, label_problem
from iat.serving_package import ServingPackage, check_compatible, read_package, snapshot_store
from iat.tokens.manifest import MANIFEST_FILE
from iat.tokens.materialize import encode_instances
from iat.tokens.online import DuplicateInstanceError, RedisClickIndex, RedisTokenStore, open_or_seed
from iat.tokens.store import TokenStore

Loc = tuple[str | int, ...]
TOP_LEVEL = ("user_id", "item_id")  # schema features that requests carry as top-level fields
QUERY_GROUPS = ("user", "context", "cross")
CANDIDATE_GROUPS = ("item", "cross")
DEFAULT_MAX_PARTS = 64


class RequestError(ValueError):
    """A request the caller must fix (HTTP 400); ``loc`` names the field, as pydantic does."""

    status = 400

    def __init__(self, loc: Loc, msg: str):
        super().__init__(f"{'.'.join(map(str, loc))}: {msg}")
        self.loc, self.msg = loc, msg


class ConflictError(RequestError):
    status = 409  # the instance is already in the store


class NotFoundError(RequestError):
    status = 404  # the instance is not in the store


class UnsupportedError(RequestError):
    status = 501  # this package cannot do it (ingest into a post-SIT store)


@dataclass
class Scores:
    """Per candidate row: pCTR, pCVR and the history lengths its score read."""

    p_ctr: np.ndarray
    p_cvr: np.ndarray
    tokens: np.ndarray  # instance tokens fetched (0 for a ranker without tokens)
    clicks: np.ndarray  # clicked items in the base behaviour sequence

    def split(self, sizes: Sequence[int]) -> list["Scores"]:
        cuts = np.cumsum(sizes)[:-1]
        parts = [np.split(a, cuts) for a in (self.p_ctr, self.p_cvr, self.tokens, self.clicks)]
        return [Scores(*cols) for cols in zip(*parts)]


@dataclass(frozen=True)
class _View:
    store: TokenStore | RedisTokenStore
    clicks: ClickIndex | RedisClickIndex
    assembler: HistoryAssembler
    stamp: tuple[int, ...]  # manifest (inode, mtime_ns, size) when this view was made; online: (version, domains)


def _stamp(root: Path) -> tuple[int, int, int]:
    st = os.stat(root / MANIFEST_FILE)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _with_click(clicks: ClickIndex, user: int, ts: int, item: int, category: int) -> ClickIndex:
    """``clicks`` plus one clicked instance, inserted after the user's rows with ts <= its ts."""
    k = int(np.searchsorted(clicks.users, user))
    known = k < len(clicks.users) and clicks.users[k] == user
    lo, hi = (int(clicks.offsets[k]), int(clicks.offsets[k + 1])) if known else (int(clicks.offsets[k]),) * 2
    at = lo + int(np.searchsorted(clicks.ts[lo:hi], ts, side="right"))
    users = clicks.users if known else np.insert(clicks.users, k, user)
    offsets = clicks.offsets.copy() if known else np.insert(clicks.offsets, k, lo)
    offsets[k + 1 :] += 1
    return ClickIndex(
        users,
        offsets,
        np.insert(clicks.ts, at, ts),
        np.insert(clicks.item_id, at, item),
        np.insert(clicks.category, at, category),
        max(clicks.max_len, hi - lo + 1),
    )


class ServingCore:
    def __init__(
        self, package: ServingPackage, ranker: RankerBundle, source: SourceBundle, store_path: Path, max_parts: int = DEFAULT_MAX_PARTS, device: str = "cpu",
        online: RedisTokenStore | None = None,
    ):  # fmt: skip
        self.package, self.ranker, self.source, self.store_path, self.online = package, ranker, source, store_path, online
        self.device = torch.device(device)
        if isinstance(ranker.model, torch.nn.Module):
            ranker.model.to(self.device)  # the ranker scores there; the source model encodes ingests on the CPU
        self.spec = ranker.spec
        self.schema = ranker.encoder.schema
        self.max_parts = max_parts
        self.features: dict[str, Feature] = {f.name: f for f in self.schema.features}
        self.category_column = self.schema.category_column
        self.post_sit = is_post_sit(package.meta["token_source"].get("model", ""))
        self._write_lock = threading.RLock()  # view() may reload while a write holds it
        if online is not None:
            check_compatible(ranker, source, online.source, f"the online store {online.prefix} (version {online.version})")
            self._view = self._make_view(online, RedisClickIndex(online), online.live_state())
            return
        store = TokenStore.open(store_path)
        check_compatible(ranker, source, store.source, str(store_path))
        self._view = self._make_view(store, ClickIndex.from_store(store), _stamp(store_path))

    @classmethod
    def load(
        cls, package: str | Path, store: str | Path | None = None, max_parts: int = DEFAULT_MAX_PARTS, device: str = "cpu", online: str | None = None
    ) -> "ServingCore":
        """Load the package's ranker and source model, and open the live token store: the online store at Redis
        URL ``online`` (seeded from the package's snapshot when nothing is published there), else ``store``
        (seeded likewise when it does not exist yet) or, by default, the package's own store, in place."""
        pkg = read_package(package)
        online_store = open_or_seed(online, pkg.store_dir) if online else None
        store_path = Path(store) if store is not None and online_store is None else pkg.store_dir
        if online_store is None and not (store_path / MANIFEST_FILE).is_file():
            if store_path.exists() and any(store_path.iterdir()):
                raise FileExistsError(f"{store_path} is neither a token store nor empty; refusing to seed a store there")
            if store_path.exists():
                store_path.rmdir()
            store_path.parent.mkdir(parents=True, exist_ok=True)
            snapshot_store(pkg.store_dir, store_path)
        return cls(pkg, load_ranker(pkg.ranker_dir), load_bundle(pkg.source_dir), store_path, max_parts, device, online=online_store)

    # -- views ----------------------------------------------------------------------------------------
    def _make_view(self, store: TokenStore, clicks: ClickIndex, stamp: tuple[int, int, int]) -> _View:
        tokens = store if self.spec.tokens is not None else None
        assembler = HistoryAssembler(self.ranker.encoder, tokens, clicks, L=self.spec.L, base_L=self.spec.base_L)
        return _View(store, clicks, assembler, stamp)

    def view(self) -> _View:
        """The current view; reloaded when another process published a new store version (online: a new live
        version, or a domain another replica's ingest added)."""
        v = self._view
        if self.online is not None:
            if v.store.live_state() != v.stamp:  # type: ignore[union-attr]
                with self._write_lock:
                    v = self._view
                    stamp = v.store.live_state()  # type: ignore[union-attr]
                    if stamp != v.stamp:
                        store = v.store.refresh() if stamp[0] != v.store.version else v.store  # type: ignore[union-attr]
                        # a newly published version must hold this package's tokens; else keep serving the old one
                        check_compatible(self.ranker, self.source, store.source, f"the online store {store.prefix} (version {store.version})")  # type: ignore[union-attr]
                        v = self._view = self._make_view(store, RedisClickIndex(store), store.live_state())  # type: ignore[arg-type]
            return v
        if _stamp(self.store_path) != v.stamp:
            with self._write_lock:
                v = self._view
                stamp = _stamp(self.store_path)
                if stamp != v.stamp:
                    store = v.store.refresh()
                    v = self._view = self._make_view(store, ClickIndex.from_store(store), stamp)
        return v

    def _publish(self, old: _View, store: TokenStore, clicks: ClickIndex) -> _View:
        """New view after our own write (caller holds the write lock). ``clicks`` is the incrementally updated
        index, valid only if nobody else wrote in between (the version moved by exactly one)."""
        stamp = _stamp(self.store_path)  # before any re-read: a write after this makes the next check reload
        if store.version != old.store.version + 1:
            clicks = ClickIndex.from_store(store)
        if len(store.parts) + len(store.manifest["label_updates"]) > self.max_parts:
            store = store.compact()  # same rows: the click index stays valid
            stamp = _stamp(self.store_path)
        self._view = self._make_view(store, clicks, stamp)
        return self._view

    # -- validation -----------------------------------------------------------------------------------
    def check_features(self, values: Mapping[str, Any], loc: Loc, groups: Sequence[str]) -> None:
        """Every key a declared feature of an allowed group, every value of its feature's type."""
        for name, v in values.items():
            where = (*loc, name)
            f = self.features.get(name)
            if name in TOP_LEVEL and f is not None:
                raise RequestError(where, f"'{name}' is a top-level field of the request, not a feature value")
            if f is None:
                raise RequestError(where, f"unknown feature; the schema declares {sorted(self.features)}")
            if f.group not in groups:
                raise RequestError(where, f"a {f.group} feature does not belong here (allowed groups: {list(groups)})")
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise RequestError(where, f"expected a number or a string, got {type(v).__name__}")
            if f.type == "numeric":
                if isinstance(v, str):
                    raise RequestError(where, "numeric feature needs a number, got a string")
                if not math.isfinite(v):
                    raise RequestError(where, "numeric feature must be finite")

    def check_query(self, q: Mapping[str, Any], loc: Loc = ()) -> None:
        self.check_features(q.get("context") or {}, (*loc, "context"), QUERY_GROUPS)
        cands = q.get("candidates") or []
        if not cands:
            raise RequestError((*loc, "candidates"), "at least one candidate is needed")
        for i, c in enumerate(cands):
            self.check_features(c.get("features") or {}, (*loc, "candidates", i, "features"), CANDIDATE_GROUPS)
        if not q.get("context") and not any(c.get("features") for c in cands):
            # legal one feature at a time (a missing one is OOV / the train mean), but all missing is a client bug
            raise RequestError((*loc, "context"), "the request names no feature at all: send the user / context / cross features in 'context' and each candidate's item features")

    # -- rank -----------------------------------------------------------------------------------------
    def query_frame(self, queries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """One row per candidate of each query, with the schema's columns (nulls where a feature is absent): a
        feature is the candidate's if it names it (item and cross features), else its query's context value."""
        sizes = [len(q["candidates"]) for q in queries]
        n = sum(sizes)
        cols: dict[str, Any] = {
            "instance_id": np.full(n, -1, np.int64),
            "user_id": np.repeat(np.array([q["user_id"] for q in queries], np.int64), sizes),
            "item_id": np.array([c["item_id"] for q in queries for c in q["candidates"]], np.int64),
            "ts": np.repeat(np.array([q["ts"] for q in queries], np.int64), sizes),
            DOMAIN_FIELD: np.repeat(np.array([q["domain"] for q in queries], object), sizes),
            "click": np.zeros(n, np.int8),
        }
        empty: dict[str, Any] = {}
        contexts = [q.get("context") or empty for q in queries]
        features = [c.get("features") or empty for q in queries for c in q["candidates"]]
        for name, f in self.features.items():
            if name in TOP_LEVEL:
                continue
            vals = np.repeat(np.array([ctx.get(name) for ctx in contexts], object), sizes)
            if f.group in CANDIDATE_GROUPS:
                for i, own in enumerate(features):
                    if name in own:
                        vals[i] = own[name]
            # numeric values are numbers or None once check_features passed: None -> NaN
            cols[name] = vals if f.type == "categorical" else vals.astype(np.float64)
        return pd.DataFrame(cols)

    @torch.no_grad()
    def score_frame(self, df: pd.DataFrame) -> Scores:
        """Score rows that carry the schema's columns: the same encode -> assemble -> predict as evaluation."""
        b = self.view().assembler.batch(self.ranker.encoder.transform(df))
        out = {k: v.cpu() for k, v in self.ranker.model.predict(to_device(b, self.device)).items()}
        n, index = len(df), b[HIST_INDEX]
        tokens = b["tok_mask"].sum(1)[index].numpy() if self.spec.tokens is not None else np.zeros(n, np.int64)
        clicks = b["seq_mask"].sum(1)[index].numpy() if "seq_mask" in b else np.zeros(n, np.int64)
        return Scores(out["p"].numpy().astype(np.float64), out["p_conv"].numpy().astype(np.float64), tokens, clicks)

    def score_queries(self, queries: Sequence[Mapping[str, Any]]) -> list[Scores]:
        """Score several queries in one forward pass; one Scores each."""
        for i, q in enumerate(queries):
            self.check_query(q, (i,) if len(queries) > 1 else ())
        return self.score_frame(self.query_frame(queries)).split([len(q["candidates"]) for q in queries])

    def rank(self, user_id: int, ts: int, context: Mapping[str, Any], candidates: Sequence[Mapping[str, Any]], domain: str) -> Scores:
        q = {"user_id": user_id, "ts": ts, "domain": domain, "context": dict(context), "candidates": list(candidates)}
        return self.score_queries([q])[0]

    # -- ingest / label -------------------------------------------------------------------------------
    def instance_frame(self, inst: Mapping[str, Any]) -> pd.DataFrame:
        """One logged instance as a one-row log with the schema's columns (labels included), validated."""
        feats = inst.get("features") or {}
        self.check_features(feats, ("features",), ("user", "item", "context", "cross"))
        click, conv, cts = inst["click"], inst.get("conversion"), inst.get("conversion_ts")
        problem = label_problem(click, conv, cts, inst["ts"])  # the offline validation's rules
        if problem is not None:
            raise RequestError((problem[0],), problem[1])
        if self.category_column and not isinstance(feats.get(self.category_column, -1), int):
            raise RequestError(("features", self.category_column), "the category is stored with every token as an integer id")
        row: dict[str, Any] = {k: [inst[k]] for k in ("instance_id", "user_id", "item_id", "ts", "domain", "click")}
        row["conversion"] = [np.nan if conv is None else float(conv)]
        row["conversion_ts"] = pd.array([cts], dtype="Int64")
        for name, f in self.features.items():
            if name not in TOP_LEVEL:
                v = feats.get(name)
                row[name] = pd.Series([v], dtype=object) if f.type == "categorical" else pd.to_numeric(pd.Series([v], dtype=object))
        return pd.DataFrame(row)

    def ingest(self, inst: Mapping[str, Any]) -> dict[str, int]:
        """Encode one logged instance with the source model and append its token; returns the store version."""
        if self.post_sit:
            raise UnsupportedError(("instance_id",), "the store holds post-SIT tokens, which depend on the user's whole sequence; ingest needs pre-SIT tokens")
        df = self.instance_frame(inst)
        token = encode_instances(self.source, df, progress=False)
        cat = self.category_column
        category = int(df[cat].iloc[0]) if cat and pd.notna(df[cat].iloc[0]) else -1
        if self.online is not None:
            return self._ingest_online(inst, df, token, category)
        with self._write_lock:
            old = self.view()
            try:
                store = old.store.append(
                    user_id=df["user_id"], ts=df["ts"], instance_id=df["instance_id"], domain=df["domain"], item_id=df["item_id"],
                    category=np.array([category], np.int64), click=df["click"], conversion=df["conversion"], conversion_ts=df["conversion_ts"],
                    tokens=token,
                )  # fmt: skip
            except ValueError as e:
                if (old.store.refresh().locate_instances([inst["instance_id"]])[0] >= 0).all():
                    raise ConflictError(("instance_id",), f"instance {inst['instance_id']} is already in the token store") from e
                raise RequestError(("instance",), str(e)) from e
            clicks = _with_click(old.clicks, int(inst["user_id"]), int(inst["ts"]), int(inst["item_id"]), category) if inst["click"] == 1 else old.clicks
            new = self._publish(old, store, clicks)
        return {"instance_id": int(inst["instance_id"]), "store_version": new.store.version, "store_rows": new.store.rows}

    def _ingest_online(self, inst: Mapping[str, Any], df: pd.DataFrame, token: np.ndarray, category: int) -> dict[str, int]:
        """``ingest`` into the online store: one atomic script, no lock (replicas write side by side)."""
        store = self.view().store
        try:
            store.append(
                user_id=df["user_id"], ts=df["ts"], instance_id=df["instance_id"], domain=df["domain"], item_id=df["item_id"],
                category=np.array([category], np.int64), click=df["click"], conversion=df["conversion"], conversion_ts=df["conversion_ts"],
                tokens=token,
            )  # fmt: skip
        except DuplicateInstanceError as e:
            raise ConflictError(("instance_id",), f"instance {inst['instance_id']} is already in the token store") from e
        except ValueError as e:
            raise RequestError(("instance",), str(e)) from e
        return {"instance_id": int(inst["instance_id"]), "store_version": store.version, "store_rows": store.rows}

    def _check_label(self, instance_id: int, conversion_ts: int, inst_ts: int, click: int) -> None:
        if conversion_ts < inst_ts:
            raise RequestError(("conversion_ts",), f"{conversion_ts} precedes the instance's ts {inst_ts}")
        if click != 1:
            raise RequestError(("instance_id",), f"instance {instance_id} was not clicked: it cannot convert")

    def label(self, instance_id: int, conversion_ts: int, conversion: int = 1) -> dict[str, int]:
        """Record a delayed conversion label (known from ``conversion_ts`` on) for a stored instance."""
        if conversion not in (0, 1):
            raise RequestError(("conversion",), "must be 0 or 1")
        if self.online is not None:
            store = self.view().store
            row = store.instance(instance_id)  # type: ignore[union-attr]
            if row is None:
                raise NotFoundError(("instance_id",), f"instance {instance_id} is not in the token store")
            self._check_label(instance_id, conversion_ts, row["ts"], row["click"])
            try:
                store.set_conversion([instance_id], conversion_ts, conversion)
            except ValueError as e:  # trimmed by another replica's ingest since the lookup
                raise NotFoundError(("instance_id",), f"instance {instance_id} is not in the token store") from e
            return {"instance_id": int(instance_id), "store_version": store.version}
        with self._write_lock:
            old = self.view()
            part, row = old.store.locate_instances([instance_id])
            if part[0] < 0:
                raise NotFoundError(("instance_id",), f"instance {instance_id} is not in the token store")
            cols = old.store.parts[int(part[0])].cols
            self._check_label(instance_id, conversion_ts, int(cols["ts"][int(row[0])]), int(cols["click"][int(row[0])]))
            store = old.store.set_conversion([instance_id], conversion_ts, conversion)
            new = self._publish(old, store, old.clicks)
        return {"instance_id": int(instance_id), "store_version": new.store.version}

    # -- facts ----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        v = self.view()
        m = self.package.meta
        return {
            "ranker": m["ranker"],
            "source": m["source"],
            "labels": m["labels"],
            "L": self.spec.L,
            "base_L": self.spec.base_L,
            "ingest": not self.post_sit,
            "store": (
                {"online": self.online.describe(), "version": v.store.version, "rows": v.store.rows}
                if self.online is not None
                else {"path": str(self.store_path), "version": v.store.version, "rows": v.store.rows, "parts": len(v.store.parts)}
            ),
        }
