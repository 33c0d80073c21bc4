"""The triage network (torch): numeric features with missingness indicators, categorical embeddings,
chief-complaint tokens, and heads for acuity (5 levels) and for P(admission), P(critical).

Vital signs enter through a separate, monotone path (:mod:`models.triage.physiology`): non-negative hinge features
times non-negative weights (softplus of a base plus an age-band adjustment), added to the outcome logits and,
for acuity, as a tilt ``s * urgency`` with ``urgency`` decreasing from level 1 to level 5. A tilt of the
logits by a non-negative multiple of a decreasing score shifts the distribution towards the urgent levels
(monotone likelihood ratio), so every cumulative P(level <= k) rises with ``s``: the decision rule's level can
only become more urgent as a vital sign moves further into danger. The trunk never sees the vital values.

Complaint tokens are pooled with a masked mean over ``F.embedding`` rather than ``nn.EmbeddingBag``:
EmbeddingBag exports to ONNX as a per-row loop (170 ms at batch 1024, ../shared/STACK.md); the masked mean
is the same computation and exports as a handful of vectorised ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.labels import ACUITY_LEVELS, OUTCOMES


def hinge_score(
    base: torch.Tensor, band_adjustment: torch.Tensor, band: torch.Tensor, danger: torch.Tensor
) -> torch.Tensor:
    """Per row and head, the hinges times non-negative weights ``softplus(base + band_adjustment[band])``.

    ``base`` is [heads, hinges], ``band_adjustment`` [age bands, heads, hinges], ``band`` [B], ``danger``
    [B, hinges] (>= 0). Returns [B, heads], each >= 0 and non-decreasing in every hinge.
    """
    weights = F.softplus(base.unsqueeze(0) + band_adjustment[band])
    return (weights * danger.unsqueeze(1)).sum(dim=-1)


class TriageNet(nn.Module):
    """Multi-task network over the encoded triage record; returns logits."""

    urgency: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        vocabulary_size: int,
        n_hinges: int,
        age_band_column: int,
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
        # Physiology path: [heads, hinges] base weights plus [age bands, heads, hinges] adjustments; the
        # weights used are their softplus (>= 0). Heads: acuity urgency, then each outcome.
        n_heads = 1 + len(OUTCOMES)
        self.age_band_column = age_band_column
        self.danger_base = nn.Parameter(torch.full((n_heads, n_hinges), -1.0))
        self.danger_band = nn.Parameter(torch.zeros(cardinalities[age_band_column], n_heads, n_hinges))
        levels = len(ACUITY_LEVELS)
        self.register_buffer("urgency", torch.linspace(1.0, 0.0, levels))

    def forward(
        self,
        numeric: torch.Tensor,
        missing: torch.Tensor,
        categorical: torch.Tensor,
        tokens: torch.Tensor,
        danger: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cats = [emb(categorical[:, i]) for i, emb in enumerate(self.category_embeddings)]
        mask = (tokens > 0).to(numeric.dtype).unsqueeze(-1)
        token_vectors = F.embedding(tokens, self.token_embedding) * mask
        pooled = token_vectors.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        hidden = self.trunk(torch.cat([numeric, missing, *cats, pooled], dim=1))
        risk = hinge_score(self.danger_base, self.danger_band, categorical[:, self.age_band_column], danger)
        acuity = self.acuity_head(hidden) + risk[:, :1] * self.urgency
        outcomes = self.outcome_head(hidden) + risk[:, 1:]
        return acuity, outcomes


class TriageEnsemble(nn.Module):
    """Average of the logits of several :class:`TriageNet` members trained from different seeds."""

    def __init__(self, members: list[TriageNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(
        self,
        numeric: torch.Tensor,
        missing: torch.Tensor,
        categorical: torch.Tensor,
        tokens: torch.Tensor,
        danger: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(numeric, missing, categorical, tokens, danger) for m in self.members]
        acuity = torch.stack([a for a, _ in outputs]).mean(dim=0)
        outcome = torch.stack([o for _, o in outputs]).mean(dim=0)
        return acuity, outcome


class PhysiologyFloor(nn.Module):
    """The excess risk the vital signs alone carry: a floor the model's risks cannot go below.

    A physiology-only model (logistic in the hinges of :mod:`models.triage.physiology`, non-negative weights, an
    intercept and a weight adjustment per age band) gives P_phys(outcome | vital signs, age band). The floor
    is ``max(0, P_phys(x) - P_phys(normal vital signs))``: the absolute risk that these vital signs add over a
    patient of the same age band with normal ones, whatever the complaint says. It is 0 when every vital sign
    is in NEWS2's normal band (so it leaves ranking among well patients to the network) and rises
    monotonically as any vital sign moves into danger (so max(network, floor) stays monotone).
    """

    def __init__(self, n_hinges: int, n_bands: int, age_band_column: int) -> None:
        super().__init__()
        n_out = len(OUTCOMES)
        self.age_band_column = age_band_column
        self.intercept = nn.Parameter(torch.full((n_bands, n_out), -3.0))
        self.weight_base = nn.Parameter(torch.full((n_out, n_hinges), -2.0))
        self.weight_band = nn.Parameter(torch.zeros(n_bands, n_out, n_hinges))

    def logits(self, categorical: torch.Tensor, danger: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit of P_phys, logit at normal vital signs), each [B, outcomes]."""
        band = categorical[:, self.age_band_column]
        base = self.intercept[band]
        return base + hinge_score(self.weight_base, self.weight_band, band, danger), base

    def forward(self, categorical: torch.Tensor, danger: torch.Tensor) -> torch.Tensor:
        logit, base = self.logits(categorical, danger)
        return torch.clamp(torch.sigmoid(logit) - torch.sigmoid(base), min=0.0)


class CalibratedTriageNet(nn.Module):
    """A trained :class:`TriageNet` (or ensemble) with temperature scaling folded in; returns calibrated probabilities.

    ``acuity_temperature`` is a scalar for the softmax over levels; ``outcome_temperatures`` has one
    temperature per binary outcome. With a :class:`PhysiologyFloor`, each outcome probability is at least
    the floor's. This is the module that is exported to ONNX.
    """

    def __init__(
        self,
        net: TriageNet | TriageEnsemble,
        acuity_temperature: float,
        outcome_temperatures: list[float],
        floor: PhysiologyFloor | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.floor = floor
        self.register_buffer("acuity_temperature", torch.tensor(float(acuity_temperature)))
        self.register_buffer("outcome_temperatures", torch.tensor([float(t) for t in outcome_temperatures]))

    def forward(
        self,
        numeric: torch.Tensor,
        missing: torch.Tensor,
        categorical: torch.Tensor,
        tokens: torch.Tensor,
        danger: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        acuity_logits, outcome_logits = self.net(numeric, missing, categorical, tokens, danger)
        acuity = torch.softmax(acuity_logits / self.acuity_temperature, dim=1)
        outcomes = torch.sigmoid(outcome_logits / self.outcome_temperatures)
        if self.floor is not None:
            outcomes = torch.maximum(outcomes, self.floor(categorical, danger))
        return acuity, outcomes
