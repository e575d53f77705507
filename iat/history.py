"""What a downstream model reads about a request's past, assembled in batches.

Two histories, both strictly before the request ts (the token store's rule):
- the *base* behaviour sequence: the user's last clicked items (item id, category, time gap), the thin
  hand-crafted sequence of a classic ranking model;
- the *instance-token* sequence: the user's last L tokens from the token store with their side info
  (click, conversion as known at request time, time gap, hour of day and day of week of the instance (UTC, from
  its ts), domain, item, category).
Both come from the token store, whose side info holds every instance's item and click, so training and
serving read the same source and the ingest path updates both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from iat.features import DOMAIN_FIELD, EncodedFrame, FeatureEncoder
from iat.models.batching import HIST_INDEX, frame_batch, gap_bucket
from iat.tokens.fetch import locate_before
from iat.tokens.store import CONVERSION_PAD, TokenStore

DAY_S = 86_400


def hour_and_weekday(ts: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hour of day (1..24) and day of week (1..7, Monday = 1) of UTC timestamps; 0 where ``mask`` is False."""
    hour = (ts % DAY_S) // 3600 + 1
    weekday = (ts // DAY_S + 3) % 7 + 1  # 1970-01-01 was a Thursday
    return np.where(mask, hour, 0), np.where(mask, weekday, 0)


@dataclass
class ClickIndex:
    """Clicked instances sorted by (user, ts): the base model's behaviour sequence source."""

    users: np.ndarray
    offsets: np.ndarray
    ts: np.ndarray
    item_id: np.ndarray
    category: np.ndarray
    max_len: int

    @classmethod
    def from_rows(cls, user_id: np.ndarray, ts: np.ndarray, instance_id: np.ndarray, item_id: np.ndarray, category: np.ndarray, click: np.ndarray) -> "ClickIndex":
        keep = np.asarray(click) == 1
        u, ts, item, cat, iid = (np.asarray(a)[keep] for a in (user_id, ts, item_id, category, instance_id))
        order = np.lexsort((iid, ts, u))
        u, ts, item, cat = u[order], ts[order], item[order], cat[order]
        users, starts, counts = np.unique(u, return_index=True, return_counts=True)
        offsets = np.append(starts, len(u)).astype(np.int64)
        return cls(users, offsets, ts, item, cat, int(counts.max()) if len(counts) else 0)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, category_column: str | None) -> "ClickIndex":
        """From instance-log rows (ids, ts, click and the schema's category column)."""
        cat = df[category_column].to_numpy(np.int64) if category_column else np.full(len(df), -1, np.int64)
        cols = (df[c].to_numpy(np.int64) for c in ("user_id", "ts", "instance_id", "item_id"))
        return cls.from_rows(*cols, cat, df["click"].to_numpy())

    @classmethod
    def from_store(cls, store: TokenStore) -> "ClickIndex":
        r = store.all_rows()
        return cls.from_rows(r["user_id"], r["ts"], r["instance_id"], r["item_id"], r["category"], r["click"])

    def fetch(self, user: np.ndarray, ts: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
        return locate_before(self.users, self.offsets, self.ts, self.max_len, user, ts, L)

    def fetch_items(self, user: np.ndarray, ts: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(item_id, category, ts, mask) [B, L] of each request's last ``L`` clicks strictly before its ts, left-padded
        (the interface ``HistoryAssembler`` reads; the online store's ``RedisClickIndex`` has the same)."""
        idx, mask = self.fetch(user, ts, L)
        if len(self.ts) == 0:  # no click anywhere yet: every history is empty
            zeros = np.zeros(mask.shape, np.int64)
            return zeros, zeros, zeros, mask
        return self.item_id[idx], self.category[idx], self.ts[idx], mask


class HistoryAssembler:
    """Turns (encoded requests, token store) into model-ready tensors, mapping raw ids to encoder indices."""

    def __init__(self, encoder: FeatureEncoder, store: TokenStore | None, clicks: ClickIndex | None, L: int, base_L: int):
        self.encoder, self.store, self.clicks, self.L, self.base_L = encoder, store, clicks, L, base_L
        self.cat_field = encoder.schema.category_column
        if store is not None:
            # store domain code -> encoder domain index (+1 shift so that padding -1 maps to 0)
            self._dom_map = np.concatenate([[0], encoder.encode_categorical(DOMAIN_FIELD, np.array(store.domains, dtype=object))])

    def _ids(self, field: str | None, raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if field is None or field not in self.encoder.vocabs:
            return np.zeros(raw.shape, np.int64)
        return np.where(mask, self.encoder.encode_categorical(field, raw.ravel()).reshape(raw.shape), 0)

    def batch(self, f: EncodedFrame) -> dict[str, torch.Tensor]:
        """The frame's rows plus their histories: fetched once per distinct (user, ts) and shared through
        ``HIST_INDEX`` (a request's 100 candidates read one history; ``expand_histories`` aligns them to rows)."""
        out = frame_batch(f)
        _, first, inverse = np.unique(np.stack([f.user_id, f.ts], axis=1), axis=0, return_index=True, return_inverse=True)
        out.update(self.histories(f.user_id[first], f.ts[first]))
        out[HIST_INDEX] = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
        return out

    def histories(self, user_id: np.ndarray, ts: np.ndarray) -> dict[str, torch.Tensor]:
        """The ``HISTORY_KEYS`` tensors of requests (user, ts), one row each, strictly before ts."""
        out: dict[str, torch.Tensor] = {}
        if self.clicks is not None:
            item, cat, click_ts, mask = self.clicks.fetch_items(user_id, ts, self.base_L)
            out["seq_item"] = torch.from_numpy(self._ids("item_id", item, mask))
            out["seq_cat"] = torch.from_numpy(self._ids(self.cat_field, cat, mask))
            out["seq_gap"] = gap_bucket(torch.from_numpy(ts[:, None] - click_ts)) * torch.from_numpy(mask)
            out["seq_mask"] = torch.from_numpy(mask)
        if self.store is not None:
            h = self.store.fetch_before(user_id, ts, self.L)
            tok = h.tokens
            out["tok"] = torch.from_numpy(np.ascontiguousarray(tok, dtype=np.float32 if tok.dtype.kind == "f" else np.int64))
            out["tok_mask"] = torch.from_numpy(h.mask)
            out["tok_click"] = torch.from_numpy((h.click.astype(np.int64) + 1))  # pad -1 -> 0, 0 -> 1, 1 -> 2
            out["tok_conv"] = torch.from_numpy(h.conversion.astype(np.int64) - CONVERSION_PAD)  # pad 0, unknown 1, 0 -> 2, 1 -> 3
            out["tok_gap"] = gap_bucket(torch.from_numpy(h.time_gap)) * torch.from_numpy(h.mask)
            hour, weekday = hour_and_weekday(h.ts, h.mask)
            out["tok_hour"], out["tok_weekday"] = torch.from_numpy(hour), torch.from_numpy(weekday)
            # a code beyond the map: a domain the online store learnt after this assembler was made (another
            # replica's ingest); out of vocabulary (index 0) for this request, the serving view reloads for the next
            code = h.domain.astype(np.int64) + 1
            known = code < len(self._dom_map)
            out["tok_domain"] = torch.from_numpy(np.where(known, self._dom_map[np.where(known, code, 0)], 0))
            out["tok_item"] = torch.from_numpy(self._ids("item_id", h.item_id, h.mask))
            out["tok_cat"] = torch.from_numpy(self._ids(self.cat_field, h.category, h.mask))
        return out
