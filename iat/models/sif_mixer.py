"""SIF-Mixer (SIF paper, section 6): axial attention over the (L+1) x T matrix of sub-tokens.

History rows (l = 1..L): each cell is the sum of the row's HGAQ codewords for that sub-token, plus a
recency encoding (position + bucketed time gap), the row's label side info (as known at request time),
and a slot embedding per sub-token. Target row (l = 0): the current request projected *continuously*
into the codebook space by a trainable copy of the tokenizer's projection (W_res), pulled onto the
quantized space by the alignment loss. N pre-LN blocks of token-level (within a row), sample-level
(within a column, across rows) attention and an FFN; the target row's mean over sub-tokens -> heads.

``mixer="flat"`` is the ablation: one attention over all (L+1) x T cells (O((LT)^2), so keep L small).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from iat.models.batching import HIST_INDEX, N_GAP_BUCKETS, gather_rows
from iat.models.hgaq import HGAQTokenizer
from iat.models.layers import mlp
from iat.models.seq import _PreLNBlock
from iat.models.source import click_conversion_loss, merged_config

DEFAULTS: dict[str, Any] = {
    "d_model": 32,
    "blocks": 4,
    "heads": 4,
    "max_len": 256,
    "mixer": "axial",  # axial | flat
    "side_labels": True,
    # The paper mean-pools the target row over its T sub-tokens; at d_model 16-32 that squeezes the whole
    # request into one d-vector, so "concat" (T x d into the head) is the default and "mean" the paper's form.
    "pool": "concat",
    "hidden": [128],
    "cvr_weight": 1.0,
}


class _AxialBlock(nn.Module):
    """Token-level attention within each row, then sample-level attention within each column, then FFN."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.row = _PreLNBlock(d, heads, 2 * d)
        self.col = _PreLNBlock(d, heads, 4 * d)

    def forward(self, x: torch.Tensor, row_pad: torch.Tensor) -> torch.Tensor:
        return self.mix_columns(self.mix_rows(x), row_pad)

    def mix_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Token-level attention: each row [.., R, T, d] on its own."""
        *lead, T, d = x.shape
        return self.row(x.reshape(-1, T, d)).reshape(*lead, T, d)

    def mix_columns(self, x: torch.Tensor, row_pad: torch.Tensor) -> torch.Tensor:
        """Sample-level attention within each column (across rows), then the FFN."""
        B, R, T, d = x.shape
        cols = x.permute(0, 2, 1, 3).reshape(B * T, R, d)
        pad = row_pad.unsqueeze(1).expand(B, T, R).reshape(B * T, R)
        cols = self.col(cols, key_pad=pad)
        return cols.reshape(B, T, R, d).permute(0, 2, 1, 3)


class SIFMixer(nn.Module):
    kind = "sif_mixer"

    def __init__(self, tokenizer: HGAQTokenizer, config: dict[str, Any] | None = None):
        super().__init__()
        cfg = merged_config(DEFAULTS, config, "SIFMixer")
        if cfg["mixer"] not in ("axial", "flat"):
            raise ValueError(f"SIFMixer: mixer must be axial or flat, got '{cfg['mixer']}'")
        self.config = cfg
        d, T = cfg["d_model"], tokenizer.T
        # Frozen codebooks: history cells are what the store holds, so they must not move during training.
        self.register_buffer("codebook", tokenizer.codebooks())  # [T, M, V, d_0]
        self.tokenizer = copy.deepcopy(tokenizer)  # its projection is the trainable W_res of the target row
        for p in self.tokenizer.rvq.parameters():
            p.requires_grad_(False)
        self.cell_in = nn.Linear(tokenizer.d_0, d)
        self.slot = nn.Parameter(torch.randn(T, d) * 0.02)
        self.pos = nn.Embedding(cfg["max_len"] + 1, d)
        self.gap = nn.Embedding(N_GAP_BUCKETS, d)
        self.side_click = nn.Embedding(3, d)
        self.side_conv = nn.Embedding(4, d)
        self.target_flag = nn.Parameter(torch.zeros(d))
        if cfg["mixer"] == "axial":
            self.blocks = nn.ModuleList([_AxialBlock(d, cfg["heads"]) for _ in range(cfg["blocks"])])
        else:
            self.blocks = nn.ModuleList([_PreLNBlock(d, cfg["heads"], 4 * d) for _ in range(cfg["blocks"])])
        self.ln = nn.LayerNorm(d)
        if cfg["pool"] not in ("concat", "mean"):
            raise ValueError(f"SIFMixer: pool must be concat or mean, got '{cfg['pool']}'")
        self.top = mlp([d * (T if cfg["pool"] == "concat" else 1), *cfg["hidden"]], last_act=True)
        self.head_click = nn.Linear(cfg["hidden"][-1], 1)
        self.head_conv = nn.Linear(cfg["hidden"][-1], 1)

    def _lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, L, T, M] -> summed codewords [B, L, T, d_0] from the frozen codebooks."""
        T, M = self.codebook.shape[:2]
        t = torch.arange(T, device=codes.device).view(1, 1, T, 1)
        m = torch.arange(M, device=codes.device).view(1, 1, 1, M)
        return self.codebook[t, m, codes.long()].sum(dim=-2)

    def forward(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """History rows are built (and, axially, row-mixed by the first block) once per distinct (user, ts) of the
        batch (``HIST_INDEX``), then every request's target row joins its history's rows."""
        codes, mask, index = b["tok"], b["tok_mask"], b.get(HIST_INDEX)
        L = mask.shape[1]
        if L > self.config["max_len"]:
            raise ValueError(f"SIFMixer: history length {L} exceeds max_len {self.config['max_len']}")
        hist = self.cell_in(self._lookup(codes))  # [H, L, T, d]
        row_extra = self.pos(torch.arange(1, L + 1, device=mask.device)).unsqueeze(0) + self.gap(b["tok_gap"])
        if self.config["side_labels"]:
            row_extra = row_extra + self.side_click(b["tok_click"]) + self.side_conv(b["tok_conv"])
        hist = hist + row_extra.unsqueeze(2) + self.slot
        h_target = self.tokenizer.project(b)  # [B, T, d_0] continuous (W_res f)
        target = (self.cell_in(h_target) + self.slot + self.target_flag + self.pos.weight[0]).unsqueeze(1)
        mask = gather_rows(mask, index)
        B = len(mask)
        row_pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        if self.config["mixer"] == "axial":
            first, *rest = self.blocks
            x = torch.cat([first.mix_rows(target), gather_rows(first.mix_rows(hist), index)], dim=1)  # [B, L+1, T, d]
            x = first.mix_columns(x, row_pad)
            for blk in rest:
                x = blk(x, row_pad)
        else:
            x = torch.cat([target, gather_rows(hist, index)], dim=1)
            T, d = x.shape[2], x.shape[3]
            flat, pad = x.reshape(B, -1, d), row_pad.unsqueeze(-1).expand(B, L + 1, T).reshape(B, -1)
            for blk in self.blocks:
                flat = blk(flat, key_pad=pad)
            x = flat.reshape(B, L + 1, T, d)
        target_out = self.ln(x[:, 0])  # [B, T, d]
        h = self.top(target_out.flatten(1) if self.config["pool"] == "concat" else target_out.mean(dim=1))
        return {"click_logit": self.head_click(h).squeeze(-1), "conv_logit": self.head_conv(h).squeeze(-1), "h_target": h_target}

    def loss(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        out = self(b)
        loss, logs = click_conversion_loss(out["click_logit"], out["conv_logit"], b["click"], b["conversion"], self.config["cvr_weight"])
        _, recon = self.tokenizer.quantize(out["h_target"])
        align = self.tokenizer.alignment_loss(out["h_target"], recon)  # the tokenizer's weight (0.25)
        return loss + align, {**logs, "align": float(align.detach())}

    @torch.no_grad()
    def predict(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self(b)
        p_conv = torch.sigmoid(out["conv_logit"])
        return {"p": torch.sigmoid(out["click_logit"]), "p_conv": p_conv, "y": b["click"], "user": b["user_id"], "y_conversion": b["conversion"]}
