"""Row batches for the models that read one instance at a time (temporal-order source model, HGAQ, logreg).

``order="time"``: consecutive rows in global time order (ts, then instance_id), the same every epoch - the paper's
temporal training order (no shuffling at all). ``order="shuffle"``: a fresh permutation per epoch, drawn from a
generator seeded by (seed, epoch) - never from the global RNGs, so ``iat.train.fit`` can replay an epoch on resume.
A batch is a dict of tensors named like the ``EncodedFrame`` arrays: cat, num, num_bucket, click, conversion,
user_id, item_id, ts, instance_id, domain.

Downstream batches (``iat.history.HistoryAssembler``) add the user's histories, which depend on (user, request ts)
alone: those tensors hold one row per distinct (user, ts) of the batch and ``HIST_INDEX`` maps each row to its
history, so a request's candidates (or a session's rows) share one history and models compute on it once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from iat.features import EncodedFrame

ORDERS = ("time", "shuffle")
HIST_INDEX = "hist_index"
N_GAP_BUCKETS = 32  # time-gap buckets of every history (base sequence, instance tokens, the SIT's rows)
# What HistoryAssembler adds: the base behaviour sequence and the instance-token sequence with its side info.
HISTORY_KEYS = ("seq_item", "seq_cat", "seq_gap", "seq_mask", "tok", "tok_mask", "tok_click", "tok_conv", "tok_gap", "tok_hour", "tok_weekday", "tok_domain", "tok_item", "tok_cat")


def gap_bucket(gap_seconds: torch.Tensor, n_buckets: int = N_GAP_BUCKETS) -> torch.Tensor:
    """1 + floor(log2(1 + gap)) of a gap in seconds (negative counts as 0), clamped to the table; 0 is left to the
    callers for padding / no earlier row. Computed in float64, so a bucket edge never moves with the dtype."""
    b = 1 + torch.floor(torch.log2(1.0 + gap_seconds.clamp(min=0).double())).long()
    return b.clamp(max=n_buckets - 1)


def gather_rows(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Per-history ``x`` [H, ...] -> per-row [B, ...] (``index`` None: one history per row already)."""
    return x if index is None else x.index_select(0, index)


def expand_histories(b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with one history row per row (no ``HIST_INDEX``): for readers that want rows aligned."""
    index = b.get(HIST_INDEX)
    if index is None:
        return b
    return {k: gather_rows(v, index) if k in HISTORY_KEYS else v for k, v in b.items() if k != HIST_INDEX}


def frame_batch(frame: EncodedFrame) -> dict[str, torch.Tensor]:
    """A whole (small) frame as one batch dict."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in frame.__dict__.items()}


class RowBatches:
    """A ``BatchSource`` over the rows of an ``EncodedFrame``."""

    def __init__(
        self,
        frame: EncodedFrame,
        batch_size: int,
        seed: int = 0,
        order: str = "time",
        assemble: Callable[[EncodedFrame], dict[str, torch.Tensor]] = frame_batch,
    ):
        if batch_size < 1:
            raise ValueError(f"RowBatches: batch_size must be >= 1, got {batch_size}")
        if order not in ORDERS:
            raise ValueError(f"RowBatches: order must be one of {ORDERS}, got '{order}'")
        if len(frame) == 0:
            raise ValueError("RowBatches: the frame has no rows")
        # Sorted once, so a time-ordered batch is a contiguous slice (no copy per batch).
        self.frame = frame.take(np.lexsort((frame.instance_id, frame.ts)))
        self.batch_size, self.seed, self.order = batch_size, seed, order
        self.assemble = assemble  # frame slice -> batch dict (downstream models add the user's histories)

    def __len__(self) -> int:
        return math.ceil(len(self.frame) / self.batch_size)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        n = len(self.frame)
        perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.order == "shuffle" else None
        for start in range(0, n, self.batch_size):
            sl = slice(start, min(start + self.batch_size, n))
            idx = sl if perm is None else perm[sl]
            yield self.assemble(self.frame.take(idx))
