"""Merge token stores that hold disjoint users into one store, streamed: memory holds one block of users.

``write_store`` on all the rows would hold the whole store (16M rows of 64-d fp32 tokens: 4 GB). Here the
merged base part is written column by column, each column in blocks of about ``block_rows`` rows of whole
users in user order; a block is gathered from each input's contiguous row range of those users (read from
its files, not mapped, so the pass leaves no pages in this process's resident set). The output equals,
byte for byte, ``write_store`` on the concatenated rows with the same dtype: rows in (user, ts,
instance_id) order, the sorted domain vocabulary, the int8 scale of all rows (from a streamed max pass).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from iat.tokens import fsio
from iat.tokens.codecs import STORED_DTYPE, check_kind_dtype, encode, int8_scale_of_absmax
from iat.tokens.manifest import check_source, new_manifest
from iat.tokens.rows import ROW_COLUMNS
from iat.tokens.store import TokenStore, _Part
from iat.tokens.writer import add_part, create_store

RAW_DTYPES = ("fp32", "uint8")  # merging re-encodes tokens, which must not compound fp16 / int8 rounding


def merge_stores(
    stores: list[TokenStore],
    out: str | Path,
    dtype: str,
    *,
    overwrite: bool = False,
    block_rows: int = 1 << 18,
    progress: bool = False,
) -> Path:
    """One store at ``out`` with every row of ``stores`` (one source model, raw fp32 / uint8 tokens, a single
    base part each, no user in two of them), tokens stored as ``dtype``."""
    if not stores:
        raise ValueError("merge_stores needs at least one store")
    first = stores[0]
    for s in stores:
        if (s.kind, s.dims, s.source) != (first.kind, first.dims, first.source):
            raise ValueError(f"{s.root} holds {s.kind} tokens {s.dims} of {s.source}; {first.root} {first.kind} {first.dims} of {first.source}")
        if s.dtype not in RAW_DTYPES or len(s.parts) != 1 or s.manifest["label_updates"]:
            raise ValueError(
                f"{s.root}: merging needs one base part of raw {RAW_DTYPES} tokens and no label updates; it has "
                f"{s.dtype} tokens, {len(s.parts)} parts, {len(s.manifest['label_updates'])} label updates"
            )
    check_kind_dtype(first.kind, dtype)
    parts = [s.parts[0] for s in stores]
    plan = _Plan(parts, block_rows)
    vocab = sorted(set().union(*(s.domains for s in stores)))
    recode = [np.array([vocab.index(d) for d in s.domains], dtype=np.int16) for s in stores]
    scale = int8_scale_of_absmax(_absmax(parts, block_rows)) if dtype == "int8" else None
    manifest = new_manifest(source=check_source(first.source), kind=first.kind, dtype=dtype, dims=list(first.dims), scale=scale)
    manifest["domains"] = vocab

    def column(name: str) -> fsio.BlockArray:
        def blocks() -> Iterator[np.ndarray]:
            for ranges, idx in tqdm(plan.blocks(), total=plan.n_blocks, desc=f"publish {name}", unit="block", disable=not progress):
                pieces = [fsio.read_rows(p.cols[name], a, b) for p, (a, b) in zip(parts, ranges)]
                if name == "domain":
                    pieces = [code[x] for code, x in zip(recode, pieces)]
                x = np.concatenate(pieces)[idx]
                yield encode(x, dtype, scale)[0] if name == "tokens" else x

        if name == "tokens":
            return fsio.BlockArray((plan.rows, *first.dims), np.dtype(STORED_DTYPE[dtype]), blocks)
        return fsio.BlockArray((plan.rows,), np.dtype(ROW_COLUMNS[name]), blocks)

    arrays = {"users": plan.users, "offsets": plan.offsets, **{c: column(c) for c in (*ROW_COLUMNS, "tokens")}}
    ts = [(p["ts_min"], p["ts_max"]) for s in stores for p in s.manifest["parts"] if p["rows"]]
    ts_range = (min(a for a, _ in ts), max(b for _, b in ts)) if ts else None
    return create_store(Path(out), manifest, lambda folder: add_part(folder, manifest, arrays, "base", ts_range), overwrite)


class _Plan:
    """Which rows of which input make up each output block (whole users, in user order)."""

    def __init__(self, parts: list[_Part], block_rows: int) -> None:
        users = np.concatenate([p.users for p in parts])
        lengths = np.concatenate([np.diff(p.offsets) for p in parts])
        order = np.argsort(users, kind="stable")
        self.users, lengths = users[order], lengths[order]
        if (self.users[1:] == self.users[:-1]).any():
            twice = self.users[1:][self.users[1:] == self.users[:-1]]
            raise ValueError(f"users in more than one store (e.g. {twice[:5].tolist()}): shard by user before merging")
        self.parts = parts
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.rows = int(self.offsets[-1])
        cuts = np.searchsorted(self.offsets, np.arange(block_rows, self.rows, block_rows), side="right") - 1
        self.edges = np.unique(np.concatenate([[0], cuts, [len(self.users)]]))  # user index bounds of blocks
        self.n_blocks = len(self.edges) - 1

    def blocks(self) -> Iterator[tuple[list[tuple[int, int]], np.ndarray]]:
        """Per block: each input's row range [a, b), and the gather index of the inputs' concatenated ranges."""
        for u0, u1 in zip(self.edges[:-1], self.edges[1:]):
            lo, hi = self.users[u0], self.users[u1 - 1]
            ranges, starts, base = [], [], 0
            for p in self.parts:
                a, b = np.searchsorted(p.users, lo, side="left"), np.searchsorted(p.users, hi, side="right")
                ranges.append((int(p.offsets[a]), int(p.offsets[b])))
                # each input's users of this block, in user order, and where their rows start in the buffer
                starts.append((p.users[a:b], base + p.offsets[a:b] - p.offsets[a]))
                base += int(p.offsets[b] - p.offsets[a])
            buf_users = np.concatenate([u for u, _ in starts])
            buf_start = np.concatenate([s for _, s in starts])
            by_user = np.argsort(buf_users, kind="stable")
            lengths = np.diff(self.offsets[u0 : u1 + 1])
            out_start = self.offsets[u0:u1] - self.offsets[u0]
            idx = np.repeat(buf_start[by_user] - out_start, lengths) + np.arange(self.offsets[u1] - self.offsets[u0])
            yield ranges, idx


def _absmax(parts: list[_Part], block_rows: int) -> np.ndarray:
    """Per-dimension max |token| over every row, read block by block."""
    m = None
    for p in parts:
        for a in range(0, p.rows, block_rows):
            x = np.abs(fsio.read_rows(p.cols["tokens"], a, min(a + block_rows, p.rows))).max(axis=0)
            m = x if m is None else np.maximum(m, x)
    if m is None:
        raise ValueError("tokens: int8 needs at least one row to calibrate its per-dimension scale")
    return m
