"""The online token store on Redis: the file store's ``fetch_before`` contract, shared live by ranking replicas.

The file store (``iat.tokens.store``) stays the offline store for training and materialisation; ``publish``
copies one of its versions to Redis, and ``RedisTokenStore`` serves reads, ingests and delayed labels from there.

Layout under a key prefix (default ``iat``), for each published version ``v``:

- ``<p>:<v>:u:<user>``: a sorted set of the user's token rows, score = ts. A member is one packed record
  ``key | ts | instance_id | domain | item_id | category | click | conversion | conversion_ts | tokens | id``:
  ``key`` is the instance id as 8 big-endian bytes with the sign bit flipped, so rows of one ts sort by instance
  id as in the file store, and ``id`` is the instance id as fixed-width text (Lua reads it to keep the index).
  Every member has the same length, so a fetch turns the members into arrays with one ``np.frombuffer``.
- ``<p>:<v>:c:<user>``: the user's clicked rows (``key | ts | item_id | category``, score = ts): the base
  ranker's clicked-item sequence (``RedisClickIndex``), kept beside the tokens by publish and by every ingest.
- ``<p>:<v>:i``: instance id -> ``<user>:<ts>`` (duplicate check and label updates find the row from it).
- ``<p>:<v>:dom``: domain -> code (append-only, assigned atomically); ``<p>:<v>:meta``: JSON of the version
  (source, kind, dtype, dims, int8 scale, retention).
- ``<p>:live``: the version readers use. ``publish`` writes a whole version first and then switches ``live`` in
  one ``SET``, so a reader never sees half a version; the version before stays (readers that opened it finish).

Reads and writes run as Lua scripts or pipelines: an ingest is one atomic script (duplicate check, add, index,
trim to the last ``retention`` rows of the user, un-index what the trim dropped), so memory is bounded by users x
retention. The label rule is the file store's: a fetched conversion shows only once ``conversion_ts`` < request ts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens.codecs import STORED_DTYPE, encode, prepare_tokens
from iat.tokens.manifest import check_source
from iat.tokens.rows import ROW_COLUMNS, prepare_rows
from iat.tokens.store import FILL, FetchResult, TokenStore, fetch_requests, fetch_result

DEFAULT_PREFIX = "iat"
ID_WIDTH = 20  # "+0000000000000012345": sign and 19 digits hold any int64
_SIGN = np.uint64(1 << 63)
_PUBLISH_CHUNK = 20_000  # members per pipeline round trip when publishing

# KEYS: user zset, index hash, user's clicked zset. ARGV: id text, member, ts, "<user>:<ts>", retention (0 = keep
# all), record width, clicked member ("" when not clicked), offset of item_id (then category) in a member.
_INGEST = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return -1 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
local keep = tonumber(ARGV[5])
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[7]) end
local dropped = 0
if keep > 0 then
  local excess = redis.call('ZCARD', KEYS[1]) - keep
  if excess > 0 then
    local width, at = tonumber(ARGV[6]), tonumber(ARGV[8])
    for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do
      redis.call('HDEL', KEYS[2], string.sub(m, width + 1))
      -- its clicked-set member, if any: key | ts | item_id | category (the clicks kept are those of kept rows)
      redis.call('ZREM', KEYS[3], string.sub(m, 1, 16) .. string.sub(m, at + 1, at + 16))
    end
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
    dropped = excess
  end
end
return dropped
"""
# KEYS: index hash. ARGV: id text, user key prefix, conversion byte, conversion_ts 8 bytes, offset of conversion
# in the member (bytes before it), offset of conversion_ts, record width.
_LABEL = """
local at = redis.call('HGET', KEYS[1], ARGV[1])
if not at then return 0 end
local sep = string.find(at, ':')
local zkey = ARGV[2] .. string.sub(at, 1, sep - 1)
local ts = string.sub(at, sep + 1)
local oc, ot, width = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', zkey, ts, ts)) do
  if string.sub(m, width + 1) == ARGV[1] then
    local new = string.sub(m, 1, oc) .. ARGV[3] .. string.sub(m, oc + 2, ot) .. ARGV[4] .. string.sub(m, ot + 9)
    redis.call('ZREM', zkey, m)
    redis.call('ZADD', zkey, ts, new)
    return 1
  end
end
return 0
"""
# KEYS: live key. ARGV: version. The switch only moves forward: a slower publish never replaces a newer one.
_SWITCH = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= cur then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return cur
"""
# KEYS: lock key. ARGV: token. Release the lock only if it is still ours.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: domain hash. ARGV: domain. The domain's code, assigned as the next one when it is new.
_DOMAIN = """
local c = redis.call('HGET', KEYS[1], ARGV[1])
if c then return tonumber(c) end
c = redis.call('HLEN', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], c)
return c
"""


class DuplicateInstanceError(ValueError):
    """An ingest of an instance id the store already holds (a retried ingest that did land, or a replay)."""


def member_dtype(dtype: str, dims: tuple[int, ...]) -> np.dtype:
    """The packed record of one token row (no padding: every member has ``itemsize`` bytes)."""
    return np.dtype(
        [
            ("key", ">u8"),
            ("ts", "<i8"),
            ("instance_id", "<i8"),
            ("domain", "<i2"),
            ("item_id", "<i8"),
            ("category", "<i8"),
            ("click", "i1"),
            ("conversion", "i1"),
            ("conversion_ts", "<i8"),
            ("tokens", np.dtype(STORED_DTYPE[dtype]).newbyteorder("<"), dims),
            ("id", f"S{ID_WIDTH}"),
        ]
    )


CLICK_DTYPE = np.dtype([("key", ">u8"), ("ts", "<i8"), ("item_id", "<i8"), ("category", "<i8")])


def pack_clicks(cols: dict[str, np.ndarray]) -> list[bytes]:
    """Rows -> one clicked-set member each (for every row; the caller keeps the clicked ones)."""
    rec = np.zeros(len(cols["ts"]), CLICK_DTYPE)
    rec["key"] = cols["instance_id"].astype(np.int64).view(np.uint64) ^ _SIGN
    for name in ("ts", "item_id", "category"):
        rec[name] = cols[name]
    raw, w = rec.tobytes(), CLICK_DTYPE.itemsize
    return [raw[i * w : (i + 1) * w] for i in range(len(rec))]


def _id_text(iid: np.ndarray) -> np.ndarray:
    return np.array([f"{int(i):+0{ID_WIDTH}d}" for i in iid], dtype=f"S{ID_WIDTH}")


def pack(cols: dict[str, np.ndarray], dt: np.dtype) -> list[bytes]:
    """Rows (stored encodings, ``tokens`` included) -> one member each."""
    n = len(cols["ts"])
    rec = np.zeros(n, dt)
    rec["key"] = cols["instance_id"].astype(np.int64).view(np.uint64) ^ _SIGN
    for name in ("ts", "instance_id", "domain", "item_id", "category", "click", "conversion", "conversion_ts", "tokens"):
        rec[name] = cols[name]
    rec["id"] = _id_text(cols["instance_id"])
    raw = rec.tobytes()
    w = dt.itemsize
    return [raw[i * w : (i + 1) * w] for i in range(n)]


@dataclass(frozen=True)
class _Meta:
    version: int
    source: dict[str, str]
    kind: str
    dtype: str
    dims: tuple[int, ...]
    scale: np.ndarray | None
    retention: int


def _keys(prefix: str, version: int) -> dict[str, str]:
    base = f"{prefix}:{version}"
    return {"user": f"{base}:u:", "clicks": f"{base}:c:", "index": f"{base}:i", "domains": f"{base}:dom", "meta": f"{base}:meta"}


def publish(store: TokenStore, client: Any, prefix: str = DEFAULT_PREFIX, retention: int = 0, keep_previous: bool = True) -> int:
    """Copy a file-store snapshot to Redis as a new version, then make it the live one; returns the live version.

    A publish replaces the live store: rows and labels ingested online into the version before are not carried
    over (publish a file store that holds them, e.g. one re-materialised from the log). ``retention`` > 0 keeps each
    user's last ``retention`` rows (here and on every later ingest). After the switch every older version is
    deleted except the one that was live (unless not ``keep_previous``), which readers may still be reading."""
    if retention < 0:
        raise ValueError(f"retention must be >= 0 (0 = keep every row), got {retention}")
    version = int(client.incr(f"{prefix}:next_version"))
    client.sadd(f"{prefix}:versions", version)  # every version that has keys, so a cleanup finds them
    keys = _keys(prefix, version)
    rows = store.all_rows()
    order = np.lexsort((rows["instance_id"], rows["ts"], rows["user_id"]))
    rows = {k: v[order] for k, v in rows.items()}
    if retention and len(order):
        users = rows["user_id"]
        start = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]  # first row of each user
        count = np.diff(np.r_[start, len(users)])
        from_end = np.repeat(start + count, count) - np.arange(len(users))  # 1 = the user's last row
        rows = {k: v[from_end <= retention] for k, v in rows.items()}
    dt = member_dtype(store.dtype, store.dims)
    members, clicked = pack(rows, dt), pack_clicks(rows)
    ids = _id_text(rows["instance_id"])
    pipe = client.pipeline(transaction=False)
    rows_of = zip(rows["user_id"].tolist(), rows["ts"].tolist(), members, ids.tolist(), rows["click"].tolist(), clicked)
    for i, (u, t, m, iid, c, cm) in enumerate(rows_of):
        pipe.zadd(f"{keys['user']}{u}", {m: t})
        pipe.hset(keys["index"], iid, f"{u}:{t}")
        if c == 1:
            pipe.zadd(f"{keys['clicks']}{u}", {cm: t})
        if (i + 1) % _PUBLISH_CHUNK == 0:
            pipe.execute()
    if store.domains:
        pipe.hset(keys["domains"], mapping={d: i for i, d in enumerate(store.domains)})
    meta = {
        "source": store.source, "kind": store.kind, "dtype": store.dtype, "dims": list(store.dims),
        "scale": None if store.scale is None else np.asarray(store.scale, np.float32).tolist(), "retention": retention,
        "published_from": {"path": str(store.root), "version": store.version, "rows": store.rows},
    }  # fmt: skip
    pipe.set(keys["meta"], json.dumps(meta))
    pipe.execute()
    previous = int(client.register_script(_SWITCH)(keys=[f"{prefix}:live"], args=[version]))  # the switch
    if previous < 0:  # a newer version went live while this one was written: this one is stale, drop it
        drop_version(client, prefix, version)
        return int(client.get(f"{prefix}:live"))
    live_before = previous if keep_previous and previous > 0 else None
    for old in sorted(int(v) for v in client.smembers(f"{prefix}:versions")):
        if old < version and old != live_before:  # half-written and superseded versions too
            drop_version(client, prefix, old)
    return version


def drop_version(client: Any, prefix: str, version: int) -> int:
    """Delete every key of one version; returns how many."""
    client.srem(f"{prefix}:versions", version)
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:{version}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


def _left_padded(found: list[list[bytes]], inverse: np.ndarray, L: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Range reads (newest first, one per distinct query) -> (records oldest first, the [B, L] mask of real
    positions, right-aligned, and the record of each real position) for the B requests reading query ``inverse``."""
    n = np.array([len(f) for f in found], np.int64)
    rec = np.frombuffer(b"".join(m for f in found for m in reversed(f)), dtype=dtype)
    n_req = n[inverse] if len(inverse) else np.zeros(0, np.int64)
    mask = np.arange(L)[None, :] >= (L - n_req)[:, None]
    start = np.r_[0, np.cumsum(n)[:-1]] if len(n) else np.zeros(0, np.int64)
    # a real position's record: its query's first record + (position - first real position)
    src = (start[inverse][:, None] + np.arange(L)[None, :] - (L - n_req)[:, None])[mask] if len(inverse) else np.zeros(0, np.int64)
    return rec, mask, src


class RedisTokenStore:
    """The live token store on Redis: ``fetch_before`` as the file store's, ``append`` / ``set_conversion`` as
    atomic scripts. ``open`` pins the live version; ``refresh`` follows a newly published one."""

    def __init__(self, client: Any, prefix: str, meta: _Meta) -> None:
        self.client, self.prefix, self.meta = client, prefix, meta
        self._vocab: list[str] = []  # domains known to this process (codes never change: append-only)
        self.keys = _keys(prefix, meta.version)
        self.record = member_dtype(meta.dtype, meta.dims)
        self._ingest = client.register_script(_INGEST)
        self._label = client.register_script(_LABEL)
        self._domain = client.register_script(_DOMAIN)

    @classmethod
    def open(cls, client: Any, prefix: str = DEFAULT_PREFIX) -> "RedisTokenStore":
        live = client.get(f"{prefix}:live")
        if live is None:
            raise FileNotFoundError(f"no token store published under '{prefix}' on this Redis: publish one first (iat.tokens.online.publish)")
        version = int(live)
        raw = client.get(_keys(prefix, version)["meta"])
        if raw is None:
            raise FileNotFoundError(f"token store version {version} under '{prefix}' has no meta (deleted while opening?)")
        m = json.loads(raw)
        scale = None if m["scale"] is None else np.asarray(m["scale"], np.float32)
        return cls(client, prefix, _Meta(version, m["source"], m["kind"], m["dtype"], tuple(m["dims"]), scale, int(m["retention"])))

    def refresh(self) -> "RedisTokenStore":
        return RedisTokenStore.open(self.client, self.prefix)

    def live_state(self) -> tuple[int, int]:
        """(the live version, the number of domains of this version), in one round trip: what a serving view
        follows."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(f"{self.prefix}:live")
        pipe.hlen(self.keys["domains"])
        live, n_domains = pipe.execute()
        return int(live or 0), int(n_domains)

    def describe(self) -> dict[str, Any]:
        kw = self.client.connection_pool.connection_kwargs
        return {"backend": "redis", "host": kw.get("host"), "port": kw.get("port"), "db": kw.get("db"), "prefix": self.prefix, "retention": self.meta.retention}

    # the file store's descriptive properties
    @property
    def version(self) -> int:
        return self.meta.version

    @property
    def source(self) -> dict[str, str]:
        return dict(self.meta.source)

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def dtype(self) -> str:
        return self.meta.dtype

    @property
    def dims(self) -> tuple[int, ...]:
        return self.meta.dims

    @property
    def scale(self) -> np.ndarray | None:
        return self.meta.scale

    @property
    def domains(self) -> list[str]:
        codes = {k.decode(): int(v) for k, v in self.client.hgetall(self.keys["domains"]).items()}
        return [d for d, _ in sorted(codes.items(), key=lambda kv: kv[1])]

    @property
    def rows(self) -> int:
        return int(self.client.hlen(self.keys["index"]))

    # -- reads ----------------------------------------------------------------------------------------
    def fetch_before(self, user_ids: Any, ts: Any, L: int = 256, decode_tokens: bool = True) -> FetchResult:
        """Each request's last ``L`` tokens with token ts < request ts, oldest first, left-padded (the file
        store's encodings). One pipelined range read per distinct (user, ts)."""
        u, t = fetch_requests(user_ids, ts, L)
        pairs, inverse = np.unique(np.stack([u, t], axis=1), axis=0, return_inverse=True) if len(u) else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        inverse = inverse.ravel()
        pipe = self.client.pipeline(transaction=False)
        for uu, tt in pairs.tolist():
            pipe.zrevrangebyscore(f"{self.keys['user']}{uu}", f"({tt}", "-inf", start=0, num=L)
        rec, mask, src = _left_padded(pipe.execute() if len(pairs) else [], inverse, L, self.record)
        B = len(u)

        def col(name: str, fill: int | float, dtype: Any) -> np.ndarray:
            out = np.full((B, L) + rec.dtype[name].shape, fill, dtype=dtype)
            out[mask] = rec[name][src]
            return out

        out = {name: col(name, fill, ROW_COLUMNS[name]) for name, fill in FILL.items()}
        stored = col("tokens", 0, STORED_DTYPE[self.dtype])
        return fetch_result(out, mask, col("conversion_ts", 0, np.int64), t, stored, self.dtype, self.scale, decode_tokens)

    def instance(self, instance_id: int) -> dict[str, int] | None:
        """The stored row of one instance (its ``ts``, ``click``, ``conversion``, ``conversion_ts``), or None."""
        key = _id_text(np.array([instance_id]))[0]
        at = self.client.hget(self.keys["index"], key)
        if at is None:
            return None
        user, ts = at.decode().split(":")
        for m in self.client.zrangebyscore(f"{self.keys['user']}{user}", ts, ts):
            if m[-ID_WIDTH:] == key:
                r = np.frombuffer(m, dtype=self.record)[0]
                return {k: int(r[k]) for k in ("ts", "click", "conversion", "conversion_ts")}
        return None

    def locate_instances(self, instance_ids: Any) -> np.ndarray:
        """Whether each instance id is in the store (retention may have dropped old ones)."""
        ids = _id_text(np.asarray(instance_ids, dtype=np.int64).ravel())
        pipe = self.client.pipeline(transaction=False)
        for i in ids.tolist():
            pipe.hexists(self.keys["index"], i)
        return np.array(pipe.execute(), bool)

    # -- writes ---------------------------------------------------------------------------------------
    def _vocabulary(self, domain: Any) -> list[str]:
        """The domain vocabulary with every domain of the batch in it: new ones get the next codes atomically (two
        replicas adding one domain agree on its code); read again only when the batch brings a domain this
        process has not seen."""
        wanted = set(str(x) for x in np.asarray(domain, dtype=object).ravel())
        if wanted - set(self._vocab):
            for d in sorted(wanted - set(self.domains)):
                self._domain(keys=[self.keys["domains"]], args=[d])
            self._vocab = self.domains
        return self._vocab

    def append(self, source: dict[str, Any] | None = None, **rows: Any) -> int:
        """Ingest rows (the file store's ``append_segment`` fields); returns how many rows the trim dropped.

        Each row is one atomic script, all in one pipeline; ids already in the store are refused and nothing of
        the batch is written (checked first; a retry of an acknowledged ingest fails loudly, as in the file store)."""
        if source is not None and check_source(source) != self.source:
            raise ValueError(f"tokens from source {source} cannot go into a store of {self.source}")
        tokens = rows.pop("tokens")
        vocab = self._vocabulary(rows["domain"])
        cols, extended = prepare_rows(**rows, domains=vocab)
        if extended != vocab:  # cannot happen: every domain of the batch was registered above
            raise RuntimeError(f"domain vocabulary changed while encoding: {extended} vs {vocab}")
        n = len(cols["ts"])
        x = prepare_tokens(tokens, self.kind, n)
        if x.shape[1:] != self.dims:
            raise ValueError(f"tokens: shape per row {x.shape[1:]} does not match the store's {self.dims}")
        if n == 0:
            return 0
        # several rows: check them all first, so a batch with a known id writes nothing (one row: the script checks)
        present = self.locate_instances(cols["instance_id"]) if n > 1 else np.zeros(1, bool)
        if present.any():
            dup = cols["instance_id"][present]
            raise DuplicateInstanceError(f"instance_id: {len(dup)} ids are already in the store (e.g. {dup[:5].tolist()})")
        cols["tokens"], _ = encode(x, self.dtype, self.scale)
        members, clicked = pack(cols, self.record), pack_clicks(cols)
        ids = _id_text(cols["instance_id"]).tolist()
        width = self.record.itemsize - ID_WIDTH
        pipe = self.client.pipeline(transaction=False)
        for uu, tt, m, i, c, cm in zip(cols["user_id"].tolist(), cols["ts"].tolist(), members, ids, cols["click"].tolist(), clicked):
            keys = [f"{self.keys['user']}{uu}", self.keys["index"], f"{self.keys['clicks']}{uu}"]
            args = [i, m, tt, f"{uu}:{tt}", self.meta.retention, width, cm if c == 1 else b"", self.record.fields["item_id"][1]]
            self._ingest(keys=keys, args=args, client=pipe)
        results = pipe.execute()
        if n == 1 and results[0] == -1:
            raise DuplicateInstanceError(f"instance_id: 1 ids are already in the store (e.g. {cols['instance_id'].tolist()})")
        if any(r == -1 for r in results):  # a concurrent writer added one of these ids between check and write
            raise DuplicateInstanceError("instance_id: some ids were added concurrently and are already in the store; the others were ingested")
        return int(sum(results))

    def set_conversion(self, instance_ids: Any, conversion_ts: Any, conversion: Any = 1) -> int:
        """Record delayed conversion labels (known from ``conversion_ts`` on); returns how many rows were found."""
        iid = np.asarray(instance_ids, dtype=np.int64).ravel()
        n = len(iid)
        cts = np.broadcast_to(np.asarray(conversion_ts, dtype=np.int64), (n,))
        conv = np.broadcast_to(np.asarray(conversion, dtype=np.int8), (n,))
        if not np.isin(conv, (0, 1)).all():
            raise ValueError(f"conversion: values must be 0/1, got {np.unique(conv)[:10].tolist()}")
        # checked first, as the file store does: an update with an unknown id or an early label writes nothing
        at = self.client.hmget(self.keys["index"], _id_text(iid).tolist()) if n else []
        missing = iid[np.array([a is None for a in at], bool)] if n else iid[:0]
        if len(missing):
            raise ValueError(f"instance_ids: {len(missing)} not in the store (e.g. {missing[:5].tolist()})")
        inst_ts = np.array([int(a.split(b":")[1]) for a in at], np.int64)
        if (cts < inst_ts).any():
            raise ValueError(f"conversion_ts: {int((cts < inst_ts).sum())} labels are known before their instance ts")
        oc = self.record.fields["conversion"][1]
        ot = self.record.fields["conversion_ts"][1]
        width = self.record.itemsize - ID_WIDTH
        pipe = self.client.pipeline(transaction=False)
        for i, c, s in zip(_id_text(iid).tolist(), conv.tolist(), cts.tolist()):
            args = [i, self.keys["user"], np.int8(c).tobytes(), np.int64(s).tobytes(), oc, ot, width]
            self._label(keys=[self.keys["index"]], args=args, client=pipe)
        found = np.array(pipe.execute(), bool)
        if not found.all():  # trimmed by a concurrent ingest's retention between the check and the write
            raise ValueError(f"instance_ids: {int((~found).sum())} not in the store (e.g. {iid[~found][:5].tolist()})")
        return n


class RedisClickIndex:
    """The base ranker's clicked-item sequence from the online store (``ClickIndex.fetch_items``'s interface)."""

    def __init__(self, store: RedisTokenStore) -> None:
        self.store = store

    def fetch_items(self, user: np.ndarray, ts: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        u, t = fetch_requests(user, ts, L)
        pipe = self.store.client.pipeline(transaction=False)
        for uu, tt in zip(u.tolist(), t.tolist()):
            pipe.zrevrangebyscore(f"{self.store.keys['clicks']}{uu}", f"({tt}", "-inf", start=0, num=L)
        rec, mask, src = _left_padded(pipe.execute() if len(u) else [], np.arange(len(u)), L, CLICK_DTYPE)
        cols = []
        for name, fill in (("item_id", 0), ("category", 0), ("ts", 0)):
            out = np.full((len(u), L), fill, np.int64)
            out[mask] = rec[name][src]
            cols.append(out)
        return cols[0], cols[1], cols[2], mask


SEED_LOCK_S = 3_600  # a seeding publish of 10M tokens took 7.5 minutes here; the lock outlives any real one


def open_or_seed(url: str, store_dir: str | Path, prefix: str = DEFAULT_PREFIX, retention: int = 0, wait_s: float = SEED_LOCK_S) -> RedisTokenStore:
    """The online store at ``url``; when nothing is published under ``prefix`` yet, the file store at ``store_dir``
    is published first, by exactly one of the replicas starting together (a lock holding a token of its owner,
    released only by it; the others wait for the live version, up to ``wait_s``)."""
    import uuid

    import redis

    client = redis.Redis.from_url(url)
    lock, token = f"{prefix}:seeding", uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while client.get(f"{prefix}:live") is None:
        if client.set(lock, token, nx=True, ex=SEED_LOCK_S):
            try:
                if client.get(f"{prefix}:live") is None:
                    publish(TokenStore.open(store_dir), client, prefix, retention)
            finally:
                client.register_script(_UNLOCK)(keys=[lock], args=[token])
        elif time.monotonic() > deadline:
            raise TimeoutError(f"the online store at {url} ('{prefix}') was being seeded by another process for over {wait_s} s")
        else:
            time.sleep(0.2)
    return RedisTokenStore.open(client, prefix)


def publish_to(store_path: str | Path, url: str, prefix: str = DEFAULT_PREFIX, retention: int = 0) -> dict[str, Any]:
    """``publish`` a file store to the Redis at ``url``; returns what is live there now (the CLI and the step)."""
    import redis

    client = redis.Redis.from_url(url)
    version = publish(TokenStore.open(store_path), client, prefix, retention)
    online = RedisTokenStore.open(client, prefix)
    return {**online.describe(), "version": version, "rows": online.rows, "from": str(store_path)}
