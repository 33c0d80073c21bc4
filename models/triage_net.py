"""The triage network (torch): numeric features with missingness indicators, categorical embeddings,
chief-complaint tokens, and heads for acuity (5 levels) and for P(admission), P(critical).

Complaint tokens are pooled with a masked mean over ``F.embedding`` rather than ``nn.EmbeddingBag``:
EmbeddingBag exports to ONNX as a per-row loop (170 ms at batch 1024, ../shared/STACK.md); the masked mean
is the same computation and exports as a handful of vectorised ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.labels import ACUITY_LEVELS, OUTCOMES


class TriageNet(nn.Module):
    """Multi-task network over the encoded triage record; returns logits."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        vocabulary_size: int,
        *,
        category_dim: int = 8,
        token_dim: int = 32,
        hidden: int = 128,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.category_embeddings = nn.ModuleList(nn.Embedding(c, category_dim) for c in cardinalities)
        self.token_embedding = nn.Parameter(torch.randn(vocabulary_size, token_dim) * 0.05)
        width = 2 * n_numeric + category_dim * len(cardinalities) + token_dim
        self.trunk = nn.Sequential(
            nn.Linear(width, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
        )
        self.acuity_head = nn.Linear(hidden, len(ACUITY_LEVELS))
        self.outcome_head = nn.Linear(hidden, len(OUTCOMES))

    def forward(
        self, numeric: torch.Tensor, missing: torch.Tensor, categorical: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cats = [emb(categorical[:, i]) for i, emb in enumerate(self.category_embeddings)]
        mask = (tokens > 0).to(numeric.dtype).unsqueeze(-1)
        token_vectors = F.embedding(tokens, self.token_embedding) * mask
        pooled = token_vectors.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        hidden = self.trunk(torch.cat([numeric, missing, *cats, pooled], dim=1))
        return self.acuity_head(hidden), self.outcome_head(hidden)


class TriageEnsemble(nn.Module):
    """Average of the logits of several :class:`TriageNet` members trained from different seeds."""

    def __init__(self, members: list[TriageNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(
        self, numeric: torch.Tensor, missing: torch.Tensor, categorical: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(numeric, missing, categorical, tokens) for m in self.members]
        acuity = torch.stack([a for a, _ in outputs]).mean(dim=0)
        outcome = torch.stack([o for _, o in outputs]).mean(dim=0)
        return acuity, outcome


class CalibratedTriageNet(nn.Module):
    """A trained :class:`TriageNet` (or ensemble) with temperature scaling folded in; returns calibrated probabilities.

    ``acuity_temperature`` is a scalar for the softmax over levels; ``outcome_temperatures`` has one
    temperature per binary outcome. This is the module that is exported to ONNX.
    """

    def __init__(self, net: TriageNet | TriageEnsemble, acuity_temperature: float,
                 outcome_temperatures: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("acuity_temperature", torch.tensor(float(acuity_temperature)))
        self.register_buffer("outcome_temperatures", torch.tensor([float(t) for t in outcome_temperatures]))

    def forward(
        self, numeric: torch.Tensor, missing: torch.Tensor, categorical: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        acuity_logits, outcome_logits = self.net(numeric, missing, categorical, tokens)
        acuity = torch.softmax(acuity_logits / self.acuity_temperature, dim=1)
        outcomes = torch.sigmoid(outcome_logits / self.outcome_temperatures)
        return acuity, outcomes
