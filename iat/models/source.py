"""The source encoder shared by the temporal-order and user-order source models (IAT stage I).

instance fields -> FieldEmbedding [F, d_e] -> per-group MLP (user, item, context, cross: one vector each)
-> low-rank DCNv2 cross layers + deep MLP over [all fields ++ group vectors] -> h
-> compress ``Linear(h, D) + activation`` (the InsEmb: the token that is stored) -> decompress MLP
-> click head and conversion head.

Every layer works on one row at a time (no batch norm, no dropout by default), so a row's code is a pure
function of its own features. The conversion head is trained on clicked rows only (``conversion`` is NaN on the
others): P(conversion | click), as the synthetic oracle defines it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iat.features import FeatureEncoder
from iat.models.layers import FieldEmbedding, mlp
from iat.schema import GROUPS

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}

ENCODER_DEFAULTS: dict[str, Any] = {
    "d_e": 8,  # field embedding width
    "d_group": 32,  # one vector per feature group
    "cross_layers": 2,  # DCNv2 cross layers (low rank)
    "cross_rank": 32,
    "hidden": [128, 128],  # deep MLP -> h (last entry is dim h)
    "D": 64,  # InsEmb width
    "code_act": "tanh",  # bounded codes: int8 per-dim scaling and drift monitoring stay well behaved
    "decompress": [64],
    "conversion_weight": 1.0,  # conversion BCE weight relative to click BCE
    # Field reconstruction from the code (weight relative to click BCE; 0 turns it off): the token must keep the
    # instance's context (hour, promo, device...) even where it predicts nothing on its own row, because it matters
    # across rows (a user's promo affinity shows only by comparing past promo and non-promo impressions).
    "recon_weight": 0.5,
    "recon_max_categories": 256,  # categorical fields with more values (ids) are not reconstructed
}


def merged_config(defaults: dict[str, Any], config: dict[str, Any] | None, owner: str) -> dict[str, Any]:
    """Defaults overridden by ``config``; unknown keys are an error naming them (typos must not pass silently)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ValueError(f"{owner}: unknown config keys {unknown}; known: {sorted(defaults)}")
    out = {**defaults, **config}
    if out.get("code_act", "tanh") not in ACTIVATIONS:
        raise ValueError(f"{owner}: code_act '{out['code_act']}' is not one of {sorted(ACTIVATIONS)}")
    return out


class CrossLayer(nn.Module):
    """DCNv2 cross layer with a low-rank weight: x_{l+1} = x_0 * (U (V x_l) + b) + x_l."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.v = nn.Linear(d, rank, bias=False)
        self.u = nn.Linear(rank, d)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.u(self.v(x)) + x


class SourceEncoder(nn.Module):
    """Encoded instance fields -> InsEmb code [.., D]; the decompress tower and the two heads read a D vector."""

    def __init__(self, encoder: FeatureEncoder, cfg: dict[str, Any]):
        super().__init__()
        d_e, d_g = cfg["d_e"], cfg["d_group"]
        self.embed = FieldEmbedding(encoder, d_e)
        groups = [f.group for f in encoder.fields]
        self.group_slices: list[tuple[int, int]] = []
        for g in GROUPS:
            idx = [i for i, gg in enumerate(groups) if gg == g]
            if idx:  # fields are ordered by group, so each group is one contiguous slice
                self.group_slices.append((idx[0], idx[-1] + 1))
        self.group_mlps = nn.ModuleList([mlp([(b - a) * d_e, d_g], last_act=True) for a, b in self.group_slices])
        d_in = len(encoder.fields) * d_e + len(self.group_slices) * d_g
        self.cross = nn.ModuleList([CrossLayer(d_in, cfg["cross_rank"]) for _ in range(cfg["cross_layers"])])
        self.deep = mlp([d_in, *cfg["hidden"]], last_act=True)
        self.compress = nn.Sequential(nn.Linear(cfg["hidden"][-1], cfg["D"]), ACTIVATIONS[cfg["code_act"]]())

    def forward(self, cat: torch.Tensor, num: torch.Tensor, num_bucket: torch.Tensor) -> torch.Tensor:
        """Rows [N, ...] -> codes [N, D]."""
        e = self.embed(cat, num, num_bucket)  # [N, F, d_e]
        flat = e.flatten(1)
        groups = [m(e[:, a:b].flatten(1)) for (a, b), m in zip(self.group_slices, self.group_mlps)]
        x0 = torch.cat([flat, *groups], dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.compress(self.deep(x))


class FieldReconstruction(nn.Module):
    """Code [N, D] -> the instance's fields: softmax over each categorical field of at most ``max_categories``
    values, and the standardised value of each numeric field. ``loss`` is the mean over fields of CE / MSE."""

    def __init__(self, encoder: FeatureEncoder, d: int, max_categories: int):
        super().__init__()
        cards = encoder.cardinalities
        self.cat_cols = [i for i, k in enumerate(cards) if k <= max_categories]
        self.sizes = [cards[i] for i in self.cat_cols]
        self.cat = nn.Linear(d, sum(self.sizes)) if self.sizes else None
        self.num = nn.Linear(d, encoder.n_num) if encoder.n_num else None

    @classmethod
    def from_config(cls, encoder: FeatureEncoder, config: dict[str, Any]) -> "FieldReconstruction | None":
        """The head a source model's config asks for (None when ``recon_weight`` is 0)."""
        return cls(encoder, config["D"], config["recon_max_categories"]) if config["recon_weight"] else None

    def add_to(
        self, loss: torch.Tensor, logs: dict[str, float], weight: float, code: torch.Tensor, cat: torch.Tensor, num: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """A source model's (loss, logs) with the weighted reconstruction loss of ``code`` added."""
        rec = self.loss(code, cat, num)
        return loss + weight * rec, {**logs, "recon": float(rec.detach())}

    def loss(self, code: torch.Tensor, cat: torch.Tensor, num: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cat is not None:
            for logits, col in zip(self.cat(code).split(self.sizes, dim=-1), self.cat_cols):
                parts.append(F.cross_entropy(logits, cat[:, col]))
        if self.num is not None:
            parts.append(F.mse_loss(self.num(code), num, reduction="none").mean(0).sum())
        return torch.stack(parts).sum() / max(len(self.cat_cols) + (num.shape[1] if self.num is not None else 0), 1)


class Heads(nn.Module):
    """Decompress MLP (D -> ...) then click and conversion logits."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        self.decompress = mlp([cfg["D"], *cfg["decompress"]], last_act=True)
        self.click = nn.Linear(cfg["decompress"][-1], 1)
        self.conversion = nn.Linear(cfg["decompress"][-1], 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.decompress(z)
        return self.click(d).squeeze(-1), self.conversion(d).squeeze(-1)


def click_conversion_loss(
    click_logit: torch.Tensor, conv_logit: torch.Tensor, click: torch.Tensor, conversion: torch.Tensor, conversion_weight: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean click BCE + weight * mean conversion BCE over clicked rows (rows with a conversion label)."""
    l_click = F.binary_cross_entropy_with_logits(click_logit, click)
    has_conv = ~torch.isnan(conversion)
    if conversion_weight and bool(has_conv.any()):
        l_conv = F.binary_cross_entropy_with_logits(conv_logit[has_conv], conversion[has_conv])
    else:
        l_conv = click_logit.new_zeros(())
    return l_click + conversion_weight * l_conv, {"bce_click": float(l_click.detach()), "bce_conversion": float(l_conv.detach())}
