"""Logistic-regression baseline on the same encoded fields: one weight per categorical value (a 1-d embedding
table, i.e. one-hot) plus a linear term per standardised numeric field. It makes no tokens."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from iat.features import FeatureEncoder
from iat.models.source import merged_config

LOGREG_DEFAULTS: dict[str, Any] = {"order": "time"}


class LogRegModel(nn.Module):
    kind = "logreg"

    def __init__(self, encoder: FeatureEncoder, config: dict[str, Any] | None = None):
        super().__init__()
        self.config = merged_config(LOGREG_DEFAULTS, config, "logreg")
        cards = encoder.cardinalities
        self.register_buffer("offsets", torch.tensor(np.concatenate([[0], np.cumsum(cards)[:-1]]), dtype=torch.long))
        self.weights = nn.Embedding(int(sum(cards)), 1)
        nn.init.zeros_(self.weights.weight)
        self.linear = nn.Linear(encoder.n_num, 1)

    def logit(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weights(batch["cat"] + self.offsets).sum(dim=(1, 2)) + self.linear(batch["num"]).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = nn.functional.binary_cross_entropy_with_logits(self.logit(batch), batch["click"])
        return loss, {}

    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"p": torch.sigmoid(self.logit(batch)), "y": batch["click"], "user": batch["user_id"]}

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError("logreg is a baseline: it makes no instance tokens")
