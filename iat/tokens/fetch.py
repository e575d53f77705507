"""Vectorised "last L rows strictly before ts" over sorted parts: locate, merge across parts, gather.

Within a part rows are sorted by (user, ts, instance_id) with per-user offsets. A batch of requests is answered
with one searchsorted for the users and a bisection over ts run for all requests at once (about log2 of the
longest user history iterations, each a numpy op over the batch), then gathers through a [B, L] index matrix.
No Python loop runs per request or per row; the only loops are over bisection steps and over parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def locate_before(
    users: np.ndarray,
    offsets: np.ndarray,
    ts: np.ndarray,
    max_len: int,
    req_users: np.ndarray,
    req_ts: np.ndarray,
    L: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Row index [B, L] and mask [B, L] of each request's last L rows with ts < request ts, oldest first.

    Real rows are right-aligned (left padding); padded slots get index 0 and mask False.
    """
    B = len(req_users)
    if len(users) == 0:
        return np.zeros((B, L), np.int64), np.zeros((B, L), bool)
    ui = np.minimum(np.searchsorted(users, req_users), len(users) - 1)
    known = users[ui] == req_users
    first = np.where(known, offsets[ui], 0)
    lo, hi = first.copy(), np.where(known, offsets[ui + 1], 0)
    # bisection for the first row with ts >= request ts inside [lo, hi), all requests together
    for _ in range(int(max_len).bit_length() + 1):
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        below = active & (ts[np.where(active, mid, 0)] < req_ts)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    idx = lo[:, None] - L + np.arange(L)[None, :]
    mask = idx >= first[:, None]
    return np.where(mask, idx, 0), mask


def merge_latest(
    idx: list[np.ndarray], mask: list[np.ndarray], ts: list[np.ndarray], iid: list[np.ndarray], L: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-part candidates into each request's last L rows by (ts, instance_id).

    Each part contributes its own last L, so the overall last L is among them. Returns (part, idx, mask).
    Each part's candidates are already sorted, so a row is P sorted runs: a stable sort on ts merges them
    in about O(L log P) per row (numpy's stable sort finds runs). It orders equal ts by part, not by
    instance_id; the rows where that happens are re-sorted on (ts, instance_id).
    """
    P = len(idx)
    all_mask = np.concatenate(mask, axis=1)
    low = np.iinfo(np.int64).min  # padding sorts first and never counts as out of order
    ts_key = np.where(all_mask, np.concatenate(ts, axis=1), low)
    iid_key = np.where(all_mask, np.concatenate(iid, axis=1), low)
    order = np.argsort(ts_key, axis=-1, kind="stable")
    s_ts, s_iid = np.take_along_axis(ts_key, order, 1), np.take_along_axis(iid_key, order, 1)
    ties = np.flatnonzero(((s_ts[:, 1:] == s_ts[:, :-1]) & (s_iid[:, 1:] < s_iid[:, :-1])).any(axis=1))
    if len(ties):
        order[ties] = np.lexsort((iid_key[ties], ts_key[ties]), axis=-1)
    order = order[:, -L:]
    part = np.repeat(np.arange(P), L)[order]
    return part, np.take_along_axis(np.concatenate(idx, axis=1), order, 1), np.take_along_axis(all_mask, order, 1)


@dataclass(frozen=True)
class GatherPlan:
    """Where each output slot comes from, computed once per fetch and shared by every column.

    One part: ``idx`` [B, L] (0 at padding) feeds a single take. Several parts: per part, the flat output
    slots it fills and the rows it reads, so each column costs one take and one scatter per part.
    """

    shape: tuple[int, int]
    pad: np.ndarray  # flat positions of padded slots
    idx: np.ndarray | None = None
    slots: tuple[np.ndarray, ...] = ()
    rows: tuple[np.ndarray, ...] = ()

    @classmethod
    def build(cls, part: np.ndarray | None, idx: np.ndarray, mask: np.ndarray, n_parts: int) -> "GatherPlan":
        pad = np.flatnonzero(~mask.ravel())
        if part is None:
            return cls(mask.shape, pad, idx=idx)
        real = mask.ravel()
        slots = tuple(np.flatnonzero(real & (part.ravel() == p)) for p in range(n_parts))
        return cls(mask.shape, pad, slots=slots, rows=tuple(idx.ravel()[s] for s in slots))


def gather(arrays: list[np.ndarray], plan: GatherPlan, fill: int | float) -> np.ndarray:
    """Gather one column from its per-part arrays into [B, L, ...]; padded slots get ``fill``."""
    tail = arrays[0].shape[1:]
    if plan.idx is not None:
        if len(arrays[0]) == 0:  # an empty store: all padding
            return np.full(plan.shape + tail, fill, dtype=arrays[0].dtype)
        out = np.asarray(np.take(arrays[0], plan.idx, axis=0)).reshape((-1, *tail))
    else:
        out = np.empty((plan.shape[0] * plan.shape[1], *tail), dtype=arrays[0].dtype)
        for arr, slots, rows in zip(arrays, plan.slots, plan.rows):
            out[slots] = np.take(arr, rows, axis=0)
    out[plan.pad] = fill
    return out.reshape(plan.shape + tail)
