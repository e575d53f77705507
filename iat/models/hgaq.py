"""SIF Sample Tokenizer: hierarchical group-adaptive quantization (HGAQ, SIF section 4; DESIGN "Defaults").

An instance's fields (FieldEmbedding, d_e = 8, in group order user, item, context, cross) are cut per group into
K_g = ceil(|F_g| / B) chunks of B consecutive fields (the last chunk zero-padded); chunk (g, k) has its own
Linear(B * d_e -> d_0) over its own fields only (SIF 18.3.1, the per-chunk reading). The T = sum_g K_g sub-token
vectors go through an M-level residual VQ with V codes and a separate codebook per (g, k, m) (``rvq.py``). A token
is then T x M uint8 codes. An auxiliary MLP over the T * d_0 quantized reconstruction predicts the instance's own
click (and conversion on clicked rows), so codewords are organised by predictive relevance (label-supervised
codebooks, SIF 4.5); the straight-through estimator carries its gradient to the projections and embeddings.

Losses. The tokenizer trains on  aux BCE + 1.0 * commitment + 0.01 * entropy  (commitment = beta * mean over rows
and sub-tokens of ||h - sg(h_hat)||^2, beta = 0.25 as SIF [B]'s internal weight; codebooks move by EMA, so there
is no codebook term). ``alignment_loss`` is the downstream SIF-Mixer's L_align (weight 0.25): the Mixer's target
row uses W_res = these projections (``project``), left continuous at inference, and L_align pulls it onto
sg(``quantize``'s reconstruction). With W_res = W_proj the two terms have the same form; they differ in who uses
them: commitment here, alignment downstream.

Codes are a pure function of the instance's own features: nothing depends on the batch (no batch statistics), and
``encode`` projects and quantizes in float64 so a near-tie between two codewords cannot flip with the batch's
shape (float32 BLAS results may differ in the last bit between batch sizes).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from iat.features import FeatureEncoder
from iat.models.layers import FieldEmbedding, mlp
from iat.models.rvq import ResidualVQ, code_usage
from iat.models.source import click_conversion_loss, merged_config
from iat.schema import GROUPS

if TYPE_CHECKING:
    from iat.train import BatchSource

HGAQ_DEFAULTS: dict[str, Any] = {
    "d_e": 8,  # per-field embedding
    "B": 4,  # fields per sub-token (paper: 32 over ~600 fields; scaled down for public-sized schemas)
    "d_0": 16,  # sub-token dimension
    "M": 3,  # residual levels
    "V": 256,  # codes per level (uint8)
    "ema_decay": 0.99,
    "restart_threshold": 1e-3,  # share of a window's rows below which a code is dead
    "restart_window": 100,  # training steps per dead-code check
    "entropy_tau": 0.02,  # soft-assignment temperature, relative to each row's mean distance
    "entropy_rows": 256,  # rows per batch the entropy term is estimated on
    "beta": 0.25,  # commitment's internal weight
    "commitment_weight": 1.0,
    "entropy_weight": 0.01,
    "align_weight": 0.25,  # downstream L_align weight (gamma)
    "aux_hidden": [128, 64],
    "conversion_weight": 1.0,  # aux BCE on conversion over clicked rows; 0 turns it off
    "order": "time",  # training row order (iat.models.batching.RowBatches)
}


@dataclass(frozen=True)
class SubToken:
    """One chunk (g, k): the fields it holds, by name and by position in ``encoder.fields``."""

    group: str
    k: int
    fields: tuple[str, ...]
    positions: tuple[int, ...]


def subtokens(encoder: FeatureEncoder, B: int) -> list[SubToken]:
    """Chunks of B consecutive fields per group, groups in GROUPS order; empty groups give no sub-token."""
    out = []
    for g in GROUPS:
        pos = [i for i, f in enumerate(encoder.fields) if f.group == g]
        for k in range(math.ceil(len(pos) / B)):
            chunk = pos[k * B : (k + 1) * B]
            out.append(SubToken(g, k, tuple(encoder.fields[i].name for i in chunk), tuple(chunk)))
    return out


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = merged_config(HGAQ_DEFAULTS, config, "HGAQ config")
    for key in ("d_e", "B", "d_0", "M", "V"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"HGAQ config: {key} must be a positive integer, got {cfg[key]!r}")
    if cfg["V"] > 256:
        raise ValueError(f"HGAQ config: V = {cfg['V']} codes do not fit the uint8 token format (at most 256)")
    for key in ("beta", "commitment_weight", "entropy_weight", "align_weight", "conversion_weight"):
        if cfg[key] < 0:
            raise ValueError(f"HGAQ config: {key} must be >= 0, got {cfg[key]}")
    cfg["aux_hidden"] = [int(x) for x in cfg["aux_hidden"]]
    return cfg


def _sq_dist(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows and sub-tokens of ||h - sg(target)||^2."""
    return ((h - target.detach()) ** 2).sum(-1).mean()


class HGAQTokenizer(nn.Module):
    kind = "hgaq"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        cfg = resolve_config(config)
        self.config = cfg
        if not encoder.fields:
            raise ValueError("HGAQ: the feature encoder has no fields to tokenize")
        self.embed = FieldEmbedding(encoder, cfg["d_e"])
        self.subtokens = subtokens(encoder, cfg["B"])
        self.T, self.M, self.V, self.d_0 = len(self.subtokens), cfg["M"], cfg["V"], cfg["d_0"]
        pad = len(encoder.fields)  # index of an all-zero field that pads the last chunk of a group
        index = [list(s.positions) + [pad] * (cfg["B"] - len(s.positions)) for s in self.subtokens]
        self.register_buffer("chunk_index", torch.tensor(index, dtype=torch.long))  # [T, B]
        # Every chunk's own Linear(B * d_e -> d_0), stored stacked so all T run as one batched matmul.
        fan_in = cfg["B"] * cfg["d_e"]
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
        self.proj_weight = nn.Parameter(torch.empty(self.T, fan_in, self.d_0).uniform_(-bound, bound))
        self.proj_bias = nn.Parameter(torch.empty(self.T, self.d_0).uniform_(-bound, bound))
        self.rvq = ResidualVQ(
            self.T, self.M, self.V, self.d_0, cfg["ema_decay"], cfg["restart_threshold"], cfg["restart_window"], cfg["entropy_tau"], cfg["entropy_rows"]
        )
        self.head = mlp([self.T * self.d_0, *cfg["aux_hidden"], 2])  # logits: click, conversion | click

    # -- tokenization ------------------------------------------------------------------------------------------------
    def project(self, batch: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> torch.Tensor:
        """Continuous sub-token vectors h [B, T, d_0] (the Mixer's target row uses these as W_res f)."""
        e = self.embed(batch["cat"], batch["num"], batch["num_bucket"])  # [B, F, d_e]
        e = torch.cat([e, e.new_zeros(e.shape[0], 1, e.shape[2])], dim=1)[:, self.chunk_index]  # [B, T, B, d_e]
        x, w, b = e.flatten(2), self.proj_weight, self.proj_bias
        if dtype is not None:
            x, w, b = x.to(dtype), w.to(dtype), b.to(dtype)
        return torch.einsum("bti,tio->bto", x, w) + b

    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [B, T, M] (int64) and reconstruction [B, T, d_0] of h; never updates the codebooks."""
        return self.rvq.quantize(h)

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each instance's token: uint8 codes [B, T, M], a pure function of its own features."""
        codes, _ = self.rvq.quantize(self.project(batch, dtype=torch.float64))
        return codes.to(torch.uint8)

    def codebooks(self) -> torch.Tensor:
        """All codewords [T, M, V, d_0] (a copy), for export next to the codes."""
        return self.rvq.codebook.detach().clone()

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [..., T, M] (or the first m levels) -> sum of their codewords [..., T, d_0]."""
        return self.rvq.lookup(codes)

    def alignment_loss(self, h_cont: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Downstream L_align: align_weight * mean over rows and sub-tokens of ||h_cont - sg(recon)||^2."""
        return self.config["align_weight"] * _sq_dist(h_cont, recon)

    @torch.no_grad()
    def usage_stats(self, batches: "BatchSource | Iterable[dict[str, torch.Tensor]]") -> dict[str, Any]:
        """Per-level code usage and perplexity (see ``rvq.code_usage``) of the encoded rows of a batch source
        (anything with ``batches(epoch)``) or an iterable of batches; plus ``n`` rows."""
        it = batches.batches(0) if hasattr(batches, "batches") else batches  # a BatchSource: its (fixed) epoch 0
        counts = torch.zeros(self.T, self.M, self.V, dtype=torch.long)
        n = 0
        for batch in it:
            codes = self.encode(batch)
            counts += self.rvq.histogram(codes)
            n += codes.shape[0]
        if n == 0:
            raise ValueError("usage_stats: no rows to encode")
        return {"n": n, **code_usage(counts)}

    # -- model protocol --------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        h = self.project(batch)
        out = self.rvq(h)  # training mode: EMA updates and dead-code restarts happen here
        q = h + (out.recon - h).detach()  # straight-through: forward = reconstruction, gradient -> h
        logits = self.head(q.flatten(1))
        total, logs = click_conversion_loss(logits[:, 0], logits[:, 1], batch["click"], batch["conversion"], cfg["conversion_weight"])
        commitment = cfg["beta"] * _sq_dist(h, out.recon)
        total = total + cfg["commitment_weight"] * commitment + cfg["entropy_weight"] * out.entropy
        logs.update(commitment=float(commitment.detach()), entropy=float(out.entropy.detach()), restarted=float(out.restarted))
        for m in range(self.M):
            logs[f"perplexity_l{m + 1}"] = out.perplexity[m]
            logs[f"usage_l{m + 1}"] = out.usage[m]
        return total, logs

    def predict(self, batch: dict[str, torch.Tensor], quantized: bool = True) -> dict[str, torch.Tensor]:
        """pCTR (and pCVR) from the auxiliary head on the quantized reconstruction (or, to compare, on h itself)."""
        h = self.project(batch)
        x = self.quantize(h)[1] if quantized else h
        p = torch.sigmoid(self.head(x.flatten(1)))
        return {"p": p[:, 0], "y": batch["click"], "user": batch["user_id"], "p_conv": p[:, 1], "y_conversion": batch["conversion"]}
