"""User-order source model (IAT option B): the source encoder + a causal SIT over each user's own instances.

Batching (``UserChunkBatches``): a user's instances in time order (ts, instance_id) are cut into chunks of
``t_src`` positions. A chunk is trained with the previous chunk of the same user in front of it as context, so
the SIT window is [context (t_src) ++ chunk (<= t_src)] and every position sees between t_src and 2 t_src - 1
earlier instances (fewer at the start of a user's history). The context's codes are **recomputed** under
``torch.no_grad`` with the current encoder at every step (no cache: a cache would hold codes of an older encoder
and make the result depend on the visiting order); they get no gradient (stop-gradient). Context rows carry
their clicks to later rows exactly like in-chunk rows. BCE at every scored chunk position. Within a window the
SIT's time rule holds (``iat.models.sit``): a position reads only rows with a strictly earlier ts.

Train and eval share one code path: training builds the windows over the user's train rows and scores all of
them; evaluation builds them over the user's full time-ordered log (all splits) and scores only the positions of
the target split, so a valid/test position sees the user's earlier instances (and their clicks), whatever their
split, as a streaming model would. Chunks without a scored position are skipped.

Visiting order of chunks (``order``): "time" = chunks sorted by their first timestamp (chronological);
"shuffle" = a permutation seeded by (seed, epoch). ``two_pass``: odd epochs visit the batches of the
chronological order in reverse (latest chunks first), i.e. a forward pass then a backward-in-time pass over the
data. "Reverse" is only the visiting order: inside a window the SIT stays causal, since a position that saw
later instances could not be reproduced at serving time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from iat.features import EncodedFrame, FeatureEncoder
from iat.models.sit import SourceInstanceTransformer
from iat.models.source import ENCODER_DEFAULTS, FieldReconstruction, Heads, SourceEncoder, click_conversion_loss, merged_config

USER_ORDER_DEFAULTS: dict[str, Any] = {
    **ENCODER_DEFAULTS,
    "t_src": 32,  # tuned on valid (synthetic, 2,000 users): 32 > 64 > 128; more users per batch mixes gradients
    "sit_layers": 2,
    "sit_heads": 4,
    "sit_ffn_mult": 4,
    "gap_buckets": 32,
    "sit_label_input": True,  # position t reads the clicks of the strictly earlier rows it attends to (never its own)
    "sit_label_heads": 0,  # > 0: a label-rate readout (iat.models.sit.MomentLabelRates) with this many heads
    "order": "shuffle",  # tuned on valid: shuffled chunks beat chronological ones
    "two_pass": False,  # needs order "time"; no gain on valid in our runs
}
CHUNK_ORDERS = ("time", "shuffle")


class UserChunkBatches:
    """A ``BatchSource`` of [n_chunks, L] windows (L <= 2 t_src), right-padded.

    Batch keys: cat [B, L, n_cat], num / num_bucket [B, L, n_num], click, conversion (NaN where none or padding),
    ts, user_id, instance_id (-1 at padding) [B, L]; ``valid`` (a real instance), ``ctx`` (context: no gradient,
    not scored) and ``mask`` (scored) [B, L] bool. Chunks are packed into a batch until it holds ``batch_rows``
    chunk rows.
    """

    def __init__(
        self,
        frame: EncodedFrame,
        score: np.ndarray | None = None,
        t_src: int = 128,
        batch_rows: int = 1024,
        seed: int = 0,
        order: str = "time",
        two_pass: bool = False,
    ):
        if t_src < 1 or batch_rows < 1:
            raise ValueError(f"UserChunkBatches: t_src and batch_rows must be >= 1, got {t_src}, {batch_rows}")
        if order not in CHUNK_ORDERS:
            raise ValueError(f"UserChunkBatches: order must be one of {CHUNK_ORDERS}, got '{order}'")
        score = np.ones(len(frame), bool) if score is None else np.asarray(score, bool)
        if score.shape != (len(frame),):
            raise ValueError(f"UserChunkBatches: score has shape {score.shape}, expected ({len(frame)},)")
        srt = np.lexsort((frame.instance_id, frame.ts, frame.user_id))
        self.frame, self.score = frame.take(srt), score[srt]
        self.t_src, self.batch_rows, self.seed, self.order, self.two_pass = t_src, batch_rows, seed, order, two_pass
        self.tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.frame.__dict__.items()}

        n = len(self.frame)
        uid = self.frame.user_id
        new_user = np.ones(n, bool)
        new_user[1:] = uid[1:] != uid[:-1]
        user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        pos = np.arange(n) - user_start
        chunk_start = np.flatnonzero(new_user | (pos % t_src == 0))
        chunk_end = np.append(chunk_start[1:], n)
        first_chunk = new_user[chunk_start]
        ctx_start = np.where(first_chunk, chunk_start, chunk_start - t_src)  # the previous chunk is always full
        keep = np.add.reduceat(self.score.astype(np.int64), chunk_start) > 0 if n else np.zeros(0, bool)
        if not keep.any():
            raise ValueError("UserChunkBatches: no instance to score")
        self.chunks = np.stack([ctx_start, chunk_start, chunk_end], axis=1)[keep]  # [n_chunks, 3] row ranges
        first = chunk_start[keep]
        self._time_groups = self._group(np.lexsort((self.frame.user_id[first], self.frame.ts[first])))

    def _group(self, order: np.ndarray) -> list[np.ndarray]:
        """Consecutive chunks (in ``order``) packed until a batch holds ``batch_rows`` chunk rows."""
        lengths = (self.chunks[:, 2] - self.chunks[:, 1])[order]
        batch_id = np.zeros(len(order), np.int64)
        filled, b = 0, 0
        for i, n in enumerate(lengths):
            if filled >= self.batch_rows:
                b, filled = b + 1, 0
            batch_id[i] = b
            filled += n
        cuts = np.flatnonzero(np.diff(batch_id)) + 1
        return np.split(order, cuts)

    def __len__(self) -> int:
        return len(self._time_groups)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        if self.order == "shuffle":
            groups = self._group(np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks)))
        else:
            groups = self._time_groups[::-1] if self.two_pass and epoch % 2 == 1 else self._time_groups
        for g in groups:
            yield self._batch(self.chunks[g])

    def _batch(self, chunks: np.ndarray) -> dict[str, torch.Tensor]:
        ctx_start, start, end = chunks[:, 0], chunks[:, 1], chunks[:, 2]
        width = end - ctx_start
        L = int(width.max())
        off = np.arange(L)
        idx = ctx_start[:, None] + off[None, :]
        valid = off[None, :] < width[:, None]
        is_ctx = valid & (idx < start[:, None])
        idx = np.where(valid, idx, 0)
        t = self.tensors
        ti, tv = torch.from_numpy(idx), torch.from_numpy(valid)
        mask = tv & ~torch.from_numpy(is_ctx) & torch.from_numpy(self.score)[ti]
        conv = t["conversion"][ti]
        return {
            "cat": t["cat"][ti],
            "num": t["num"][ti],
            "num_bucket": t["num_bucket"][ti],
            "click": t["click"][ti] * tv,
            "conversion": torch.where(tv, conv, torch.full_like(conv, math.nan)),
            "ts": t["ts"][ti],
            "user_id": t["user_id"][ti],
            "instance_id": torch.where(tv, t["instance_id"][ti], torch.full_like(ti, -1)),
            "valid": tv,
            "ctx": torch.from_numpy(is_ctx),
            "mask": mask,
        }


class UserOrderSourceModel(nn.Module):
    kind = "user_order"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        self.config = merged_config(USER_ORDER_DEFAULTS, config, "user-order source model")
        c = self.config
        if c["order"] not in CHUNK_ORDERS:
            raise ValueError(f"user-order source model: order '{c['order']}' is not one of {CHUNK_ORDERS}")
        if c["two_pass"] and c["order"] != "time":
            raise ValueError("user-order source model: two_pass reverses the chronological order; it needs order 'time'")
        self.encoder = SourceEncoder(encoder, c)
        self.sit = SourceInstanceTransformer(
            c["D"], 2 * c["t_src"], c["sit_layers"], c["sit_heads"], c["sit_ffn_mult"], c["gap_buckets"],
            label_input=c["sit_label_input"], label_heads=c["sit_label_heads"],
        )  # fmt: skip
        self.heads = Heads(c)
        self.recon = FieldReconstruction.from_config(encoder, c)

    def codes(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pre-SIT codes [B, L, D] of a window batch; context rows computed without gradient, padding zero."""
        cur = batch["valid"] & ~batch["ctx"]
        out = torch.zeros(*cur.shape, self.config["D"], dtype=batch["num"].dtype, device=batch["num"].device)
        rows = lambda m: (batch["cat"][m], batch["num"][m], batch["num_bucket"][m])  # noqa: E731
        out = out.index_put(cur.nonzero(as_tuple=True), self.encoder(*rows(cur)))
        if bool(batch["ctx"].any()):
            with torch.no_grad():  # stop-gradient context; the index_put itself must stay outside no_grad
                ctx_codes = self.encoder(*rows(batch["ctx"]))
            out = out.index_put(batch["ctx"].nonzero(as_tuple=True), ctx_codes)
        return out

    def post_sit(self, batch: dict[str, torch.Tensor], codes: torch.Tensor | None = None) -> torch.Tensor:
        return self.sit(self.codes(batch) if codes is None else codes, batch["ts"], batch["click"], batch["valid"])

    def _logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Click and conversion logits at the scored positions, flat [N]."""
        return self.heads(self.post_sit(batch)[batch["mask"]])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = batch["mask"]
        codes = self.codes(batch)
        click_logit, conv_logit = self.heads(self.post_sit(batch, codes)[m])
        loss, logs = click_conversion_loss(click_logit, conv_logit, batch["click"][m], batch["conversion"][m], self.config["conversion_weight"])
        if self.recon is not None:  # on the stored (pre-SIT) codes of the scored positions
            loss, logs = self.recon.add_to(loss, logs, self.config["recon_weight"], codes[m], batch["cat"][m], batch["num"][m])
        return loss, logs

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        click_logit, conv_logit = self._logits(batch)
        m = batch["mask"]
        return {
            "p": torch.sigmoid(click_logit),
            "y": batch["click"][m],
            "user": batch["user_id"][m],
            "p_conv": torch.sigmoid(conv_logit),
            "y_conversion": batch["conversion"][m],
            "instance_id": batch["instance_id"][m],
        }

    def encode(self, batch: dict[str, torch.Tensor], post_sit: bool = False) -> torch.Tensor:
        """Tokens. A row batch (cat [B, n_cat]) -> pre-SIT codes [B, D], a pure function of each row.
        A window batch (cat [B, L, n_cat]) -> codes of its scored positions, flat [N, D] in ``mask`` order:
        pre-SIT, or the SIT outputs with ``post_sit=True`` (which depend on the earlier instances)."""
        if batch["cat"].dim() == 2:
            if post_sit:
                raise ValueError("post-SIT tokens need a user window batch (UserChunkBatches), not a row batch")
            return self.encoder(batch["cat"], batch["num"], batch["num_bucket"])
        codes = self.codes(batch)
        return (self.post_sit(batch, codes) if post_sit else codes)[batch["mask"]]
