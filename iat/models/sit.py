"""Source Instance Transformer (SIT): causal pre-LN Transformer over a user's time-ordered instance codes.

Input at position t = code_t + learned position embedding + bucketed log time-gap embedding (gap to the previous
instance in the window) + (optionally) an embedding of the PREVIOUS instance's click label (a "start" value at the
window's first position). Through the causal mask, position t therefore sees the features of instances <= t and
the clicks of instances < t only - never its own label. Nothing after t can move the output at t.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

START_LABEL = 2  # label-input id at the first position of a window (0/1 are the previous click)


def gap_buckets(ts: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """[B, L] timestamps -> time-gap bucket ids: 0 at the first position, else 1 + floor(log2(1 + gap seconds))."""
    gap = (ts[:, 1:] - ts[:, :-1]).clamp(min=0).double()
    b = 1 + torch.floor(torch.log2(1.0 + gap)).long().clamp(max=n_buckets - 2)
    return torch.cat([torch.zeros_like(ts[:, :1]), b], dim=1)


def previous_labels(click: torch.Tensor) -> torch.Tensor:
    """[B, L] 0/1 clicks -> the previous position's click, START_LABEL at position 0."""
    prev = click[:, :-1].long()
    return torch.cat([torch.full_like(prev[:, :1], START_LABEL), prev], dim=1)


class CausalBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"SIT width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))
        # Residual branches start at zero: the block starts as the identity, so the encoder below trains as if
        # the SIT were absent and the SIT learns to add history on top (with random branches the encoder's
        # codes drown in noise and the source model barely learns).
        for lin in (self.out, self.ffn[2]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(a.transpose(1, 2).reshape(B, L, d))
        return x + self.ffn(self.ln2(x))


class SourceInstanceTransformer(nn.Module):
    def __init__(self, d: int, max_len: int, layers: int = 2, heads: int = 4, ffn_mult: int = 4, n_gap_buckets: int = 32, label_input: bool = True):
        super().__init__()
        self.max_len, self.n_gap_buckets = max_len, n_gap_buckets
        self.pos = nn.Embedding(max_len, d)
        self.gap = nn.Embedding(n_gap_buckets, d)
        self.label = nn.Embedding(START_LABEL + 1, d) if label_input else None
        for emb in (self.pos, self.gap, self.label):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        self.blocks = nn.ModuleList([CausalBlock(d, heads, ffn_mult * d) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, codes: torch.Tensor, ts: torch.Tensor, click: torch.Tensor) -> torch.Tensor:
        """codes [B, L, D], ts [B, L], click [B, L] (values at padding are ignored: padding is at the end) -> [B, L, D]."""
        L = codes.shape[1]
        if L > self.max_len:
            raise ValueError(f"SIT window of {L} positions exceeds max_len {self.max_len}")
        x = codes + self.pos.weight[:L] + self.gap(gap_buckets(ts, self.n_gap_buckets))
        if self.label is not None:
            x = x + self.label(previous_labels(click))
        for blk in self.blocks:
            x = blk(x)
        return self.ln(x)
