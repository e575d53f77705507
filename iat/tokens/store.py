"""Reading a token store: ``TokenStore.open`` (a consistent, memory-mapped snapshot) and ``fetch_before``.

Encoding of a fetch (``mask`` True = real token; real tokens are right-aligned, oldest first):

- ``tokens``: float32 [B, L, D] dequantised, or uint8 codes [B, L, T, M]; padding 0.
- ``ts`` / ``time_gap``: token ts / request ts - token ts (always > 0); padding 0.
- ``instance_id``, ``item_id``, ``category``: int64; padding -1.
- ``domain``: int16 code into ``store.domains``; padding -1.
- ``click``: 0/1 (known at the token's ts, which is before the request); padding -1.
- ``conversion``: 1 / 0 when the label was known before the request (conversion_ts < request ts), else
  -1 = CONVERSION_UNKNOWN (not yet known, never known, or no click); padding -2 = CONVERSION_PAD.
  A 0 is shown only when it has a conversion_ts: showing 0 for "never converted" while a later conversion
  still reads unknown would tell the model which rows convert in the future.

``conversion_ts`` itself is never returned: it would tell the model about the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens.codecs import decode
from iat.tokens.fetch import GatherPlan, gather, locate_before, merge_latest
from iat.tokens.manifest import (
    VERIFY_MODES,
    TokenStoreError,
    load_part_files,
    read_manifest,
    require_source,
)
from iat.tokens.rows import ROW_COLUMNS

CONVERSION_UNKNOWN = -1
CONVERSION_PAD = -2
# padding value of each gathered row column (conversion: overwritten by the label rule)
FILL = {"ts": 0, "instance_id": -1, "domain": -1, "item_id": -1, "category": -1, "click": -1, "conversion": 0}


@dataclass
class FetchResult:
    """Histories for a batch of requests; see the module docstring for the encodings."""

    tokens: np.ndarray
    mask: np.ndarray
    ts: np.ndarray
    time_gap: np.ndarray
    instance_id: np.ndarray
    domain: np.ndarray
    item_id: np.ndarray
    category: np.ndarray
    click: np.ndarray
    conversion: np.ndarray
    scale: np.ndarray | None = None  # int8 per-dimension scale, set when tokens were fetched undecoded

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)


@dataclass(frozen=True)
class _Part:
    name: str
    users: np.ndarray
    offsets: np.ndarray
    max_len: int
    cols: dict[str, np.ndarray]  # ROW_COLUMNS and "tokens", memory-mapped (conversion columns may be patched)

    @property
    def rows(self) -> int:
        return len(self.cols["ts"])


def fetch_requests(user_ids: Any, ts: Any, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked fetch arguments: user ids [B] and one ts per request (``ts`` may be one value for all)."""
    u = np.asarray(user_ids, dtype=np.int64)
    if u.ndim != 1:
        raise ValueError(f"user_ids must be 1-d, got shape {u.shape}")
    t = np.asarray(ts, dtype=np.int64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != len(u)):
        raise ValueError(f"ts must be one value or one per request ({len(u)}), got shape {t.shape}")
    if L < 1:
        raise ValueError(f"L must be >= 1, got {L}")
    return u, np.broadcast_to(t, u.shape)


def fetch_result(
    out: dict[str, np.ndarray], mask: np.ndarray, conversion_ts: np.ndarray, t: np.ndarray, stored: np.ndarray,
    dtype: str, scale: np.ndarray | None, decode_tokens: bool,
) -> FetchResult:
    """Gathered columns -> ``FetchResult``: the label rule (a conversion shows once ``conversion_ts`` < request
    ts), time gaps, and the tokens decoded (or stored values with their scale). Shared by every backend."""
    visible = mask & (conversion_ts < t[:, None])
    conversion = np.where(visible, out.pop("conversion"), CONVERSION_UNKNOWN).astype(np.int8)
    conversion[~mask] = CONVERSION_PAD
    decoded = decode_tokens or dtype in ("fp32", "uint8")
    return FetchResult(
        tokens=decode(stored, dtype, scale) if decoded else stored,
        mask=mask,
        time_gap=np.where(mask, t[:, None] - out["ts"], 0),
        conversion=conversion,
        scale=None if decoded else scale,
        **out,
    )  # fmt: skip


class TokenStore:
    """An immutable snapshot of a store: the manifest version read at open and the parts it lists."""

    def __init__(self, root: Path, manifest: dict[str, Any], parts: list[_Part]) -> None:
        self.root = root
        self.manifest = manifest
        self.parts = parts
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | Path, verify: str = "fast", expected_source: dict[str, Any] | None = None
    ) -> "TokenStore":
        """Open the latest published version.

        ``verify='fast'`` checks every file's size, shape and dtype against the manifest; ``'full'`` also
        checksums every byte. ``expected_source`` (any subset of the source keys) refuses a store made by
        another source model with SourceMismatchError.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
        root = Path(path)
        for _ in range(5):
            manifest = read_manifest(root)
            if expected_source is not None:
                require_source(manifest, expected_source, str(root))
            try:
                raw = [load_part_files(root, p, verify) for p in manifest["parts"]]
                labels = [load_part_files(root, p, verify) for p in manifest["label_updates"]]
            except FileNotFoundError:
                # a compaction published a newer version and removed parts between our two reads: retry
                if read_manifest(root)["version"] != manifest["version"]:
                    continue
                raise
            parts = [cls._check_part(root, rec, arr, manifest) for rec, arr in zip(manifest["parts"], raw)]
            store = cls(root, manifest, parts)
            store._apply_label_updates(labels)
            return store
        raise TokenStoreError(f"token store {root} kept changing while opening; too many concurrent compactions")

    @staticmethod
    def _check_part(root: Path, rec: dict[str, Any], arr: dict[str, np.ndarray], manifest: dict[str, Any]) -> _Part:
        missing = sorted((set(ROW_COLUMNS) | {"users", "offsets", "tokens"}) - set(arr))
        if missing:
            raise TokenStoreError(f"token store {root}: part {rec['name']} lacks arrays {missing}")
        n, offsets = rec["rows"], arr["offsets"]
        lengths = {k: len(arr[k]) for k in (*ROW_COLUMNS, "tokens")}
        if any(v != n for v in lengths.values()) or len(offsets) != len(arr["users"]) + 1 or offsets[-1] != n:
            raise TokenStoreError(f"token store {root}: part {rec['name']} has inconsistent lengths {lengths}")
        if list(arr["tokens"].shape[1:]) != manifest["dims"]:
            raise TokenStoreError(
                f"token store {root}: part {rec['name']} tokens are {list(arr['tokens'].shape[1:])}, "
                f"manifest dims {manifest['dims']}"
            )
        cols = {k: arr[k] for k in (*ROW_COLUMNS, "tokens")}
        # the bisection's step count comes from the data, not from the manifest's note of it
        return _Part(rec["name"], arr["users"], offsets, int(np.diff(offsets).max(initial=0)), cols)

    def _apply_label_updates(self, labels: list[dict[str, np.ndarray]]) -> None:
        """Overlay delayed conversion labels (later updates win) onto in-memory copies of the label columns."""
        if not labels:
            return
        iid = np.concatenate([lab["instance_id"] for lab in labels])
        conv = np.concatenate([lab["conversion"] for lab in labels])
        cts = np.concatenate([lab["conversion_ts"] for lab in labels])
        # keep the last update per instance
        _, last_rev = np.unique(iid[::-1], return_index=True)
        keep = len(iid) - 1 - last_rev
        part, row = self.locate_instances(iid[keep])
        if (part < 0).any():
            raise TokenStoreError(f"token store {self.root}: label updates name instances the store does not hold")
        for p in np.unique(part):
            sel = keep[part == p]
            cols = self.parts[p].cols
            cols["conversion"] = np.array(cols["conversion"])
            cols["conversion_ts"] = np.array(cols["conversion_ts"])
            cols["conversion"][row[part == p]] = conv[sel]
            cols["conversion_ts"][row[part == p]] = cts[sel]

    def refresh(self) -> "TokenStore":
        """This snapshot if it is still the published version, else a snapshot of the newer one."""
        if read_manifest(self.root)["version"] == self.version:
            return self
        return TokenStore.open(self.root)

    # -- facts ----------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def source(self) -> dict[str, str]:
        return dict(self.manifest["source"])

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.manifest["dims"])

    @property
    def scale(self) -> np.ndarray | None:
        s = self.manifest["int8_scale"]
        return None if s is None else np.asarray(s, dtype=np.float32)

    @property
    def domains(self) -> list[str]:
        return list(self.manifest["domains"])

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    # -- reads ----------------------------------------------------------------------------------------
    def fetch_before(self, user_ids: Any, ts: Any, L: int = 256, decode_tokens: bool = True) -> FetchResult:
        """Each request's last ``L`` tokens with token ts < request ts, oldest first, left-padded.

        ``ts`` may be one value for the whole batch. Unknown users get an all-masked history.
        ``decode_tokens=False`` returns stored fp16 / int8 values (with ``scale``) for decoding on device.
        """
        u, t = fetch_requests(user_ids, ts, L)
        # empty parts hold nothing to merge; a store has at least its base part
        live = [p for p in self.parts if p.rows > 0] or self.parts[:1]
        found = [locate_before(p.users, p.offsets, p.cols["ts"], p.max_len, u, t, L) for p in live]
        if len(live) == 1:
            part, (idx, mask) = None, found[0]
        else:
            ts_c = [p.cols["ts"][i] for p, (i, _) in zip(live, found)]
            iid_c = [p.cols["instance_id"][i] for p, (i, _) in zip(live, found)]
            part, idx, mask = merge_latest([f[0] for f in found], [f[1] for f in found], ts_c, iid_c, L)

        plan = GatherPlan.build(part, idx, mask, len(live))

        def col(name: str, fill: int | float) -> np.ndarray:
            return gather([p.cols[name] for p in live], plan, fill)

        out = {name: col(name, fill) for name, fill in FILL.items()}
        return fetch_result(out, mask, col("conversion_ts", 0), t, col("tokens", 0), self.dtype, self.scale, decode_tokens)

    def locate_instances(self, instance_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """(part index, row) of each instance id; -1, -1 where the store does not hold it."""
        if self._index is None:
            iid = np.concatenate([p.cols["instance_id"] for p in self.parts])
            owner = np.repeat(np.arange(len(self.parts)), [p.rows for p in self.parts])
            row = np.concatenate([np.arange(p.rows) for p in self.parts])
            order = np.argsort(iid, kind="stable")
            self._index = (iid[order], owner[order], row[order])
        sorted_iid, owner, row = self._index
        q = np.asarray(instance_ids, dtype=np.int64)
        if len(sorted_iid) == 0:
            return np.full(q.shape, -1, np.int64), np.full(q.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(sorted_iid, q), len(sorted_iid) - 1)
        hit = sorted_iid[pos] == q
        return np.where(hit, owner[pos], -1), np.where(hit, row[pos], -1)

    def all_rows(self) -> dict[str, np.ndarray]:
        """Every row of this snapshot in stored encodings, with per-row ``user_id`` (label updates applied)."""
        cols = {
            k: np.concatenate([np.asarray(p.cols[k]) for p in self.parts]) for k in (*ROW_COLUMNS, "tokens")
        }
        cols["user_id"] = np.concatenate([np.repeat(p.users, np.diff(p.offsets)) for p in self.parts])
        return cols

    # -- writes (each publishes a new version and returns a snapshot of it) ---------------------------
    # imported here because segments builds on TokenStore
    def append(self, **rows: Any) -> "TokenStore":
        from iat.tokens.segments import append_segment

        append_segment(self.root, source=self.source, **rows)
        return self.refresh()

    def set_conversion(self, instance_ids: Any, conversion_ts: Any, conversion: Any = 1) -> "TokenStore":
        from iat.tokens.segments import set_conversion

        set_conversion(self.root, instance_ids, conversion_ts, conversion)
        return self.refresh()

    def compact(self) -> "TokenStore":
        from iat.tokens.segments import compact

        compact(self.root)
        return self.refresh()
