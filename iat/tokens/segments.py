"""Online changes to a published store: append a segment, record delayed conversions, compact.

Each change runs under the writer lock, writes new immutable files, and publishes a new manifest version;
readers see all of a change or none of it. Fetch merges the base and the segments, so nothing needs to be
rewritten on append; ``compact`` folds segments and label updates into one new base to keep fetch fast.
Compaction holds the lock for its whole run, so appends wait for it.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from iat.tokens import fsio
from iat.tokens.codecs import encode, prepare_tokens
from iat.tokens.manifest import PARTS_DIR, check_source, require_source
from iat.tokens.rows import int_column, prepare_rows
from iat.tokens.store import TokenStore
from iat.tokens.writer import add_rows_part, publish, write_part_dir


def _next_manifest(store: TokenStore) -> dict[str, Any]:
    m = copy.deepcopy(store.manifest)
    m["version"] += 1
    return m


def append_segment(
    path: str | Path,
    *,
    source: dict[str, Any],
    user_id: Any,
    ts: Any,
    instance_id: Any,
    domain: Any,
    item_id: Any,
    category: Any,
    click: Any,
    conversion: Any,
    conversion_ts: Any,
    tokens: Any,
) -> int:
    """Append rows (any order) as a new segment; returns the published version.

    ``source`` must match the store's source model. Instance ids already in the store are refused, so a
    retried append that did publish fails loudly instead of duplicating tokens. An empty batch publishes nothing.
    """
    root = Path(path)
    src = check_source(source)
    with fsio.writer_lock(root):
        store = TokenStore.open(root)
        require_source(store.manifest, src, str(root))
        cols, vocab = prepare_rows(
            user_id=user_id, ts=ts, instance_id=instance_id, domain=domain, item_id=item_id, category=category,
            click=click, conversion=conversion, conversion_ts=conversion_ts, domains=store.domains,
        )  # fmt: skip
        n = len(cols["ts"])
        x = prepare_tokens(tokens, store.kind, n)
        if x.shape[1:] != store.dims:
            raise ValueError(f"tokens: shape per row {x.shape[1:]} does not match the store's {store.dims}")
        if n == 0:
            return store.version
        part, _ = store.locate_instances(cols["instance_id"])
        if (part >= 0).any():
            dup = cols["instance_id"][part >= 0]
            raise ValueError(f"instance_id: {len(dup)} ids are already in the store (e.g. {dup[:5].tolist()})")
        cols["tokens"], clipped = encode(x, store.dtype, store.scale)
        m = _next_manifest(store)
        m["domains"] = vocab
        rec = add_rows_part(root, m, cols, "segment")
        rec["int8_clipped_values"] = clipped
        publish(root, m)
        return int(m["version"])


def set_conversion(path: str | Path, instance_ids: Any, conversion_ts: Any, conversion: Any = 1) -> int:
    """Record delayed conversion labels (known from ``conversion_ts`` on) as a label update; returns the version.

    ``conversion`` is 0/1, one value or one per id. A later update of the same instance wins.
    """
    root = Path(path)
    iid = np.asarray(instance_ids, dtype=np.int64).ravel()
    n = len(iid)
    cts = int_column("conversion_ts", np.broadcast_to(np.asarray(conversion_ts), (n,)), n)
    conv = int_column("conversion", np.broadcast_to(np.asarray(conversion), (n,)), n)
    if not np.isin(conv, (0, 1)).all():
        raise ValueError(f"conversion: values must be 0/1, got {np.unique(conv)[:10].tolist()}")
    if len(np.unique(iid)) != n:
        raise ValueError("instance_ids: an id appears twice in one label update")
    with fsio.writer_lock(root):
        store = TokenStore.open(root)
        part, row = store.locate_instances(iid)
        if (part < 0).any():
            raise ValueError(f"instance_ids: {int((part < 0).sum())} not in the store (e.g. {iid[part < 0][:5].tolist()})")
        inst_ts = np.empty(n, np.int64)
        for p in np.unique(part):
            inst_ts[part == p] = store.parts[p].cols["ts"][row[part == p]]
        if (cts < inst_ts).any():
            raise ValueError(f"conversion_ts: {int((cts < inst_ts).sum())} labels are known before their instance ts")
        m = _next_manifest(store)
        name = f"labels-v{m['version']:06d}-{uuid.uuid4().hex[:8]}"
        arrays = {"instance_id": iid, "conversion": conv.astype(np.int8), "conversion_ts": cts}
        files = write_part_dir(root / PARTS_DIR, name, arrays)
        m["label_updates"].append({"name": name, "rows": n, "files": files})
        publish(root, m)
        return int(m["version"])


def compact(path: str | Path) -> int:
    """Merge all segments and label updates into one new base (byte-identical tokens); returns the version.

    Reads every part in full and checks its checksums first, so corruption is not re-sealed under new ones.
    """
    root = Path(path)
    with fsio.writer_lock(root):
        store = TokenStore.open(root, verify="full")
        if len(store.parts) == 1 and not store.manifest["label_updates"]:
            return store.version
        m = _next_manifest(store)
        m["parts"], m["label_updates"], m["rows"] = [], [], 0
        add_rows_part(root, m, store.all_rows(), "base")
        publish(root, m)
        return int(m["version"])
