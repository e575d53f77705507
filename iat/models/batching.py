"""Row batches for the models that read one instance at a time (temporal-order source model, HGAQ, logreg).

``order="time"``: consecutive rows in global time order (ts, then instance_id), the same every epoch - the paper's
temporal training order (no shuffling at all). ``order="shuffle"``: a fresh permutation per epoch, drawn from a
generator seeded by (seed, epoch) - never from the global RNGs, so ``iat.train.fit`` can replay an epoch on resume.
A batch is a dict of tensors named like the ``EncodedFrame`` arrays: cat, num, num_bucket, click, conversion,
user_id, item_id, ts, instance_id, domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from iat.features import EncodedFrame

ORDERS = ("time", "shuffle")


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
