"""The physiology path is monotone by construction: more danger never lowers a risk or the urgency."""

from __future__ import annotations

import numpy as np
import torch

from models.triage.decision import recommend_levels
from models.triage.net import CalibratedTriageNet, PhysiologyFloor, TriageEnsemble, TriageNet
from models.triage.physiology import AGE_BANDS, HINGES, age_band_index


def _net(seed: int) -> CalibratedTriageNet:
    torch.manual_seed(seed)
    members = [TriageNet(4, [3, len(AGE_BANDS) + 1], 10, len(HINGES), 1, hidden=16) for _ in range(2)]
    for m in members:  # arbitrary (also negative-looking) weights: monotonicity must not depend on training
        for p in m.parameters():
            torch.nn.init.normal_(p, std=1.5)
    floor = PhysiologyFloor(len(HINGES), len(AGE_BANDS) + 1, 1)
    for p in floor.parameters():
        torch.nn.init.normal_(p, std=1.5)
    return CalibratedTriageNet(TriageEnsemble(members), 1.3, [0.8, 1.7], floor).eval()


def test_more_danger_never_lowers_risk_or_urgency():
    rng = np.random.default_rng(0)
    for seed in range(5):
        net = _net(seed)
        n = 64
        numeric = torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32))
        missing = torch.zeros(n, 4)
        categorical = torch.from_numpy(np.stack([rng.integers(0, 3, n), rng.integers(0, 7, n)], 1))
        tokens = torch.from_numpy(rng.integers(0, 10, (n, 5)))
        danger = torch.from_numpy(rng.exponential(size=(n, len(HINGES))).astype(np.float32))
        with torch.no_grad():
            acuity0, outcome0 = net(numeric, missing, categorical, tokens, danger)
            for j in rng.choice(len(HINGES), 6, replace=False):
                worse = danger.clone()
                worse[:, j] += torch.from_numpy(rng.exponential(size=n).astype(np.float32))
                acuity1, outcome1 = net(numeric, missing, categorical, tokens, worse)
                assert (outcome1 - outcome0).min() >= -1e-6
                # Every cumulative P(level <= k) rises: the decision rule can only become more urgent.
                assert (acuity1.cumsum(1) - acuity0.cumsum(1)).min() >= -1e-6
                for w in (0.5, 1.0, 2.0, 5.0):
                    assert (recommend_levels(acuity1.numpy(), w) <= recommend_levels(acuity0.numpy(), w)).all()


def test_hinges_are_zero_in_the_normal_band_and_grow_beyond_it():
    from models.triage.physiology import danger_features

    normal = {
        "resp_rate": np.array([16.0]),
        "spo2": np.array([97.0]),
        "sbp": np.array([120.0]),
        "heart_rate": np.array([70.0]),
        "temperature_c": np.array([37.0]),
    }
    assert danger_features(normal).sum() == 0
    missing = {k: np.array([np.nan]) for k in normal}
    assert danger_features(missing).sum() == 0
    values = [danger_features({**normal, "spo2": np.array([v])}).sum() for v in (95, 92, 88, 80, 70)]
    assert values == sorted(values) and values[0] > 0


def test_age_bands():
    assert age_band_index(np.array([np.nan, 0.5, 1, 4.9, 5, 11, 12, 15.9, 16, 64, 65, 100])).tolist() == [
        0,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
        5,
        5,
        6,
        6,
    ]


def test_physiology_floor_is_zero_at_normal_vital_signs_and_binds_in_danger():
    torch.manual_seed(0)
    floor = PhysiologyFloor(len(HINGES), len(AGE_BANDS) + 1, 1)
    categorical = torch.tensor([[0, 5], [0, 5]])
    danger = torch.zeros(2, len(HINGES))
    danger[1, 3] = 5.0
    out = floor(categorical, danger)
    assert out[0].abs().max() == 0 and (out[1] > 0).all()
