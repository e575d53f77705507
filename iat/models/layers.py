"""Layers shared by every model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from iat.features import N_BUCKETS, FeatureEncoder


class FieldEmbedding(nn.Module):
    """Every field of an instance -> a d_e vector: [B, F, d_e], fields in ``encoder.fields`` order (by group).

    Categorical: one table per field (packed into one ``nn.Embedding`` with offsets for speed).
    Numeric: a quantile-bucket embedding plus the standardised value times a learned per-field vector.
    """

    def __init__(self, encoder: FeatureEncoder, d_e: int = 12):
        super().__init__()
        cards = encoder.cardinalities
        self.d_e = d_e
        self.n_fields = len(encoder.fields)
        self.register_buffer("cat_offsets", torch.tensor(np.concatenate([[0], np.cumsum(cards)[:-1]]), dtype=torch.long))
        self.cat_table = nn.Embedding(int(sum(cards)), d_e)
        n_num = encoder.n_num
        self.register_buffer("num_offsets", torch.arange(n_num, dtype=torch.long) * N_BUCKETS)
        self.bucket_table = nn.Embedding(max(n_num * N_BUCKETS, 1), d_e)
        self.num_scale = nn.Parameter(torch.randn(n_num, d_e) * 0.1)
        nn.init.normal_(self.cat_table.weight, std=0.05)
        nn.init.normal_(self.bucket_table.weight, std=0.05)
        # Position of each field in [categorical..., numeric...] -> its place in group order.
        n_cat = len(cards)
        src = [f.column if f.type == "categorical" else n_cat + f.column for f in encoder.fields]
        self.register_buffer("order", torch.tensor(src, dtype=torch.long))

    def forward(self, cat: torch.Tensor, num: torch.Tensor, num_bucket: torch.Tensor) -> torch.Tensor:
        e_cat = self.cat_table(cat + self.cat_offsets)  # [B, n_cat, d_e]
        e_num = self.bucket_table(num_bucket + self.num_offsets) + num.unsqueeze(-1) * self.num_scale
        return torch.cat([e_cat, e_num], dim=1)[:, self.order]


def mlp(sizes: list[int], act: type[nn.Module] = nn.ReLU, dropout: float = 0.0, last_act: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with an activation between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def soft_label_rates(
    scores: torch.Tensor, prior_score: torch.Tensor, prior_rate: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A soft nearest-neighbour estimate of outcome rates: attention over a learned prior slot and the keys'
    ``scores`` [..., Q, L] (-inf where a key may not be read) averages the keys' ``labels`` [..., L, C], the prior
    slot contributing sigmoid(``prior_rate``); ``prior_score`` broadcasts to [..., Q, 1]. Returns the rates
    [..., Q, C] and the log attention mass over the keys relative to the prior (>= 0; 0 without a key) [..., Q]."""
    prior = prior_score.expand(*scores.shape[:-1], 1)
    full = torch.cat([prior, scores], dim=-1)
    a = torch.softmax(full, dim=-1)
    rate = a[..., :1] * torch.sigmoid(prior_rate) + a[..., 1:] @ labels
    return rate, torch.logsumexp(full, dim=-1) - prior.squeeze(-1)
