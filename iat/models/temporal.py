"""Temporal-order source model (IAT option A): the source encoder trained on rows in global time order.

Batches are ``iat.models.batching.RowBatches`` with ``order="time"``: consecutive rows sorted by (ts, instance_id),
the same order every epoch, as a streaming trainer would see them (no shuffling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from iat.features import FeatureEncoder
from iat.models.source import ENCODER_DEFAULTS, FieldReconstruction, Heads, SourceEncoder, click_conversion_loss, merged_config

TEMPORAL_DEFAULTS: dict[str, Any] = {**ENCODER_DEFAULTS, "order": "time"}


class TemporalSourceModel(nn.Module):
    kind = "temporal"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        self.config = merged_config(TEMPORAL_DEFAULTS, config, "temporal source model")
        self.encoder = SourceEncoder(encoder, self.config)
        self.heads = Heads(self.config)
        self.recon = FieldReconstruction.from_config(encoder, self.config)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """InsEmb codes [B, D] of a row batch."""
        return self.encoder(batch["cat"], batch["num"], batch["num_bucket"])

    def logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.encode(batch))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        code = self.encode(batch)
        click_logit, conv_logit = self.heads(code)
        loss, logs = click_conversion_loss(click_logit, conv_logit, batch["click"], batch["conversion"], self.config["conversion_weight"])
        if self.recon is not None:
            loss, logs = self.recon.add_to(loss, logs, self.config["recon_weight"], code, batch["cat"], batch["num"])
        return loss, logs

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        click_logit, conv_logit = self.logits(batch)
        return {
            "p": torch.sigmoid(click_logit),
            "y": batch["click"],
            "user": batch["user_id"],
            "p_conv": torch.sigmoid(conv_logit),
            "y_conversion": batch["conversion"],
        }
