"""Downstream ranking model: base (non-sequence features + item-id behaviour sequence + interaction MLP),
optionally with an IAT branch over the user's instance tokens (IAT paper, section 5).

IAT branch: tokens -> adapter MLP (D -> 64) ++ side-info embedding (64: click / conversion as known at
request time, time gap, hour of day and day of week, domain, item, category) -> F_iat in {DIN, Transformer, LONGER} with a query
compressed from the current request's features -> one vector that enters the interaction MLP as an input
("before", the paper's choice) or joins after it ("after", the ablation).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iat.features import FeatureEncoder
from iat.models.batching import HIST_INDEX, N_GAP_BUCKETS
from iat.models.layers import FieldEmbedding, mlp
from iat.models.seq import LabelAttention, build_seq_module
from iat.models.source import click_conversion_loss

DEFAULTS: dict[str, Any] = {
    "seq": "din",  # base behaviour-sequence module: din | transformer | longer | none
    "iat": None,  # F_iat over instance tokens: None (base model) | din | transformer | longer
    "iat_position": "before",  # before | after the interaction MLP
    "query": "compressed",  # compressed (current request's features) | id (item + category embedding)
    "side_labels": True,  # click / conversion side info on each token
    "token_input": True,  # False: the adapter reads zeros instead of the tokens (control: side info only)
    "token_dim": 64,
    "d_e": 8,
    "d_seq": 32,
    "d_iat": 32,  # F_iat width (the paper's 512-d query is far beyond a 2-core CPU budget)
    "layers": 1,  # attention layers of the Transformer / LONGER modules
    "label_heads": 0,  # > 0: a label-attention readout beside F_iat (soft click / conversion rates of similar past instances)
    "hidden": [256, 128],
    "dropout": 0.0,  # after each hidden layer of the interaction MLP
    "cvr_weight": 1.0,
}


# Side info of an instance token (embedding tables side_<name>, batch keys tok_<name>); the labels apart, because
# the label-attention readout reads tokens without them.
SIDE_INFO = ("gap", "hour", "weekday", "domain", "item", "cat")
SIDE_LABELS = ("click", "conv")


class Ranker(nn.Module):
    kind = "ranker"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        cfg = {**DEFAULTS, **(config or {})}
        unknown = set(cfg) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown ranker config keys: {sorted(unknown)}")
        if cfg["iat_position"] not in ("before", "after") or cfg["query"] not in ("compressed", "id"):
            raise ValueError(f"iat_position must be before|after and query compressed|id, got {cfg['iat_position']}, {cfg['query']}")
        self.config = cfg
        self.fe = FieldEmbedding(encoder, cfg["d_e"])
        n_fields = len(encoder.fields)
        d_ns = n_fields * cfg["d_e"]
        cards = dict(zip(encoder.cat_names, encoder.cardinalities))
        self._item_col = encoder.cat_names.index("item_id") if "item_id" in cards else None
        cat_field = encoder.schema.category_column
        self._cat_col = encoder.cat_names.index(cat_field) if cat_field in cards else None
        order = self.fe.order.tolist()  # output position of each field in the FieldEmbedding
        self._target_pos = [order.index(c) if c is not None else None for c in (self._item_col, self._cat_col)]
        n_item, n_cat = cards.get("item_id", 1), cards.get(cat_field, 1)
        ds = cfg["d_seq"]

        self.use_seq = cfg["seq"] != "none"
        d_inter = d_ns
        if self.use_seq:
            self.seq_item = nn.Embedding(n_item, ds)
            self.seq_cat = nn.Embedding(n_cat, ds)
            self.seq_gap = nn.Embedding(N_GAP_BUCKETS, ds)
            self.seq_query = nn.Linear(2 * cfg["d_e"], ds)
            self.seq_module = build_seq_module(cfg["seq"], ds, cfg["layers"])
            d_inter += ds

        self.use_iat = cfg["iat"] is not None
        if self.use_iat:
            di = cfg["d_iat"]
            self.adapter = mlp([cfg["token_dim"], 64], last_act=True)
            self.side_click = nn.Embedding(3, 64)
            self.side_conv = nn.Embedding(4, 64)
            self.side_gap = nn.Embedding(N_GAP_BUCKETS, 64)
            self.side_hour = nn.Embedding(25, 64)
            self.side_weekday = nn.Embedding(8, 64)
            self.side_domain = nn.Embedding(cards["domain"], 64)
            self.side_item = nn.Embedding(n_item, 64)
            self.side_cat = nn.Embedding(n_cat, 64)
            self.token_proj = nn.Linear(128, di)
            q_in = d_ns + (ds if self.use_seq else 0) if cfg["query"] == "compressed" else 2 * cfg["d_e"]
            self.iat_query = mlp([q_in, 256, di]) if cfg["query"] == "compressed" else nn.Linear(q_in, di)
            self.iat_module = build_seq_module(cfg["iat"], di, cfg["layers"])
            self.label_att = LabelAttention(di, cfg["label_heads"], labels=2) if cfg["label_heads"] else None
            d_iat_out = di + (self.label_att.out_dim if self.label_att is not None else 0)
            if cfg["iat_position"] == "before":
                d_inter += d_iat_out

        self.interaction = mlp([d_inter, *cfg["hidden"]], last_act=True, dropout=cfg["dropout"])
        d_top = cfg["hidden"][-1] + (d_iat_out if self.use_iat and cfg["iat_position"] == "after" else 0)
        self.head_click = nn.Linear(d_top, 1)
        self.head_conv = nn.Linear(d_top, 1)

    # -- pieces --------------------------------------------------------------------------------
    def _target_item(self, fields: torch.Tensor) -> torch.Tensor:
        """The current request's item and category field embeddings, [B, 2 d_e] (zeros if absent)."""
        parts = [fields[:, p] if p is not None else fields.new_zeros(fields.shape[0], fields.shape[2]) for p in self._target_pos]
        return torch.cat(parts, dim=-1)

    def _instance_tokens(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(InsTokens with side info, the same without the label side info) [H, L, d_iat].

        token_proj is linear, so its side-info columns are applied to the (small) embedding tables instead of to
        every position: each position then sums its rows of the projected tables in one ``embedding_bag`` (the
        numbers of concatenating the looked-up embeddings and projecting them, with a fraction of the work)."""
        tok = b["tok"] if self.config["token_input"] else torch.zeros_like(b["tok"])
        content = F.linear(self.adapter(tok), self.token_proj.weight[:, :64], self.token_proj.bias) + self._side(b, SIDE_INFO)
        if not self.config["side_labels"]:
            return content, content
        return content + self._side(b, SIDE_LABELS), content

    def _side(self, b: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
        """Sum over ``names`` of side_<name>(b["tok_<name>"]), projected by token_proj's side columns: [H, L, d_iat]."""
        tables = [getattr(self, f"side_{n}").weight for n in names]
        projected = torch.cat(tables) @ self.token_proj.weight[:, 64:].T
        offsets = torch.tensor([0, *[len(t) for t in tables[:-1]]], device=projected.device).cumsum(0)
        idx = torch.stack([b[f"tok_{n}"] for n in names], dim=-1) + offsets
        return F.embedding_bag(idx.view(-1, len(names)), projected, mode="sum").view(*idx.shape[:-1], -1)

    @staticmethod
    def _token_labels(b: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, L, 2]: click, and conversion as known at request time (1 only once known), per token."""
        return torch.stack([(b["tok_click"] == 2), (b["tok_conv"] == 3)], dim=-1).to(b["tok"].dtype if b["tok"].is_floating_point() else torch.float32)

    def forward(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Row features are per row; the histories per distinct (user, ts), which rows read through ``HIST_INDEX``:
        their embeddings, adapter and projections run once per history (``iat.models.batching``)."""
        index = b.get(HIST_INDEX)
        fields = self.fe(b["cat"], b["num"], b["num_bucket"])
        target = self._target_item(fields)
        x = [fields.flatten(1)]
        if self.use_seq:
            seq = self.seq_item(b["seq_item"]) + self.seq_cat(b["seq_cat"]) + self.seq_gap(b["seq_gap"])
            x.append(self.seq_module(self.seq_query(target), seq, b["seq_mask"], index))
        iat_out = None
        if self.use_iat:
            q_in = torch.cat(x, dim=-1) if self.config["query"] == "compressed" else target
            query = self.iat_query(q_in)
            tokens, content = self._instance_tokens(b)
            iat_out = self.iat_module(query, tokens, b["tok_mask"], index)
            if self.label_att is not None:
                iat_out = torch.cat([iat_out, self.label_att(query, content, b["tok_mask"], self._token_labels(b), index)], dim=-1)
            if self.config["iat_position"] == "before":
                x.append(iat_out)
        h = self.interaction(torch.cat(x, dim=-1))
        if iat_out is not None and self.config["iat_position"] == "after":
            h = torch.cat([h, iat_out], dim=-1)
        return {"click_logit": self.head_click(h).squeeze(-1), "conv_logit": self.head_conv(h).squeeze(-1)}

    # -- training protocol ---------------------------------------------------------------------
    def loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self(b)
        return click_conversion_loss(out["click_logit"], out["conv_logit"], b["click"], b["conversion"], self.config["cvr_weight"])

    @torch.no_grad()
    def predict(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(b)
        p_conv = torch.sigmoid(out["conv_logit"])
        return {"p": torch.sigmoid(out["click_logit"]), "p_conv": p_conv, "y": b["click"], "user": b["user_id"], "y_conversion": b["conversion"]}
