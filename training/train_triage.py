"""Fit the triage network: seeded split, multi-task training with early stopping, temperature scaling.

Acuity is trained only on rows that have a triage level (the loss is masked elsewhere); the admission and
critical-care heads use every row, since outcomes are recorded for every visit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.labels import OUTCOMES
from models.triage.features import AGE_BAND_FEATURE, FeatureEncoder
from models.triage.marginal import combine_marginal, marginalise
from models.triage.net import CalibratedTriageNet, PhysiologyFloor, TriageEnsemble, TriageNet
from models.triage.onnx import INPUT_NAMES
from models.triage.physiology import HINGES
from training.config import TriageTrainConfig

log = logging.getLogger(__name__)


@dataclass
class TrainedTriageModel:
    """The result of :func:`train_triage`."""

    model: CalibratedTriageNet
    encoder: FeatureEncoder
    acuity_temperature: float
    outcome_temperatures: list[float]
    train_ids: list[str]
    validation_ids: list[str]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)

    def predict_probs(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Torch-side calibrated probabilities (for ONNX parity checks)."""
        encoded = self.encoder.transform(frame)
        expanded, rows, weights = marginalise(self.encoder, encoded)
        self.model.eval()
        with torch.no_grad():
            acuity, outcomes = self.model(*_tensors(expanded))
        n = len(encoded["categorical"])
        return (
            combine_marginal(acuity.numpy(), rows, weights, n),
            combine_marginal(outcomes.numpy(), rows, weights, n),
        )


def _tensors(enc: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(enc[k]) for k in INPUT_NAMES)


def _input_dropout(
    batch: tuple[torch.Tensor, ...], encoder: FeatureEncoder, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Blank each input in a fraction ``p`` of the rows, as if it had not been recorded.

    Numeric inputs (age excepted: it is required) become missing, and a blanked vital sign's hinges become 0;
    categorical inputs go to the missing slot (the derived age band excepted); the complaint is emptied.
    The network so learns "not recorded" as a state of its own: without this, a field NHAMCS always records
    (sex) took an untrained embedding when a site left it blank.
    """
    if p <= 0:
        return batch
    numeric, missing, categorical, tokens, danger, *labels = batch
    numeric, missing, categorical = numeric.clone(), missing.clone(), categorical.clone()
    tokens, danger = tokens.clone(), danger.clone()
    n = len(numeric)
    for j, name in enumerate(encoder.numeric_features):
        if name == "age_years":
            continue
        drop = torch.rand(n, generator=generator) < p
        numeric[drop, j] = 0.0
        missing[drop, j] = 1.0
        for h, hinge in enumerate(HINGES):
            if hinge.field == name:
                danger[drop, h] = 0.0
    for j, name in enumerate(encoder.categorical_features):
        if name == AGE_BAND_FEATURE:
            continue
        categorical[torch.rand(n, generator=generator) < p, j] = 0
    tokens[torch.rand(n, generator=generator) < p] = 0
    return (numeric, missing, categorical, tokens, danger, *labels)


def _fit_member(
    encoder: FeatureEncoder,
    train_t: tuple[torch.Tensor, ...],
    val_t: tuple[torch.Tensor, ...],
    config: TriageTrainConfig,
    rng: np.random.Generator,
    progress: bool,
    desc: str,
) -> tuple[TriageNet, list[dict[str, float]], int]:
    """Fit one network with early stopping on validation loss; returns it at its best epoch."""
    net = TriageNet(
        len(encoder.numeric_features),
        encoder.cardinalities,
        encoder.vocabulary_size,
        len(HINGES),
        encoder.age_band_column,
        category_dim=config.category_dim,
        token_dim=config.token_dim,
        hidden=config.hidden,
        dropout=config.dropout,
    )
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    best_loss, best_state, best_epoch, stale = math.inf, None, 0, 0
    history: list[dict[str, float]] = []
    n_train = len(train_t[0])
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    bar = tqdm(range(1, config.epochs + 1), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        order = torch.from_numpy(rng.permutation(n_train))
        total = 0.0
        for start in range(0, n_train, config.batch_size):
            idx = order[start : start + config.batch_size]
            batch = _input_dropout(tuple(t[idx] for t in train_t), encoder, config.input_dropout, generator)
            loss = _loss(net, batch, config)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.item()) * len(idx)
        net.eval()
        with torch.no_grad():
            val_loss = float(_loss(net, val_t, config).item())
        history.append({"epoch": epoch, "train_loss": total / n_train, "val_loss": val_loss})
        bar.set_postfix(train=f"{total / n_train:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best_loss - 1e-5:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                log.info("%s: early stop at epoch %d (best %d, val loss %.4f)", desc, epoch, best_epoch, best_loss)
                break
    assert best_state is not None  # at least one epoch ran
    net.load_state_dict(best_state)
    return net.eval(), history, best_epoch


def split_train_validation(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by acuity level (missing level as its own stratum). Returns row positions."""
    rng = np.random.default_rng(seed)
    strata = frame["acuity"].astype("float").fillna(0).to_numpy()
    val = []
    for level in np.unique(strata):
        rows = np.flatnonzero(strata == level)
        rng.shuffle(rows)
        val.append(rows[: round(len(rows) * fraction)])
    val_rows = np.sort(np.concatenate(val))
    train_rows = np.setdiff1d(np.arange(len(frame)), val_rows)
    return train_rows, val_rows


def _labels(frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    acuity = frame["acuity"].astype("float").fillna(0).to_numpy().astype(np.int64) - 1  # -1 = no level
    outcomes = frame[list(OUTCOMES)].to_numpy(dtype=np.float32)
    return torch.from_numpy(acuity), torch.from_numpy(outcomes)


def _loss(model: TriageNet, batch: tuple[torch.Tensor, ...], config: TriageTrainConfig) -> torch.Tensor:
    *inputs, acuity, outcomes = batch
    acuity_logits, outcome_logits = model(*inputs)
    has_level = acuity >= 0
    loss = config.outcome_loss_weight * F.binary_cross_entropy_with_logits(outcome_logits, outcomes)
    if bool(has_level.any()):
        loss = loss + config.acuity_loss_weight * F.cross_entropy(acuity_logits[has_level], acuity[has_level])
    return loss


def fit_temperature(logits: torch.Tensor, loss_fn: Any) -> float:
    """Minimise the validation NLL over log-temperature with LBFGS (Guo et al. 2017)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = loss_fn(logits / log_t.exp())
        loss.backward()
        return loss

    optimiser.step(closure)
    value = float(log_t.exp().item())
    return value if math.isfinite(value) and value > 0 else 1.0


def fit_physiology_floor(
    train_t: tuple[torch.Tensor, ...], encoder: FeatureEncoder, config: TriageTrainConfig
) -> PhysiologyFloor:
    """Fit the physiology-only model behind :class:`models.triage.net.PhysiologyFloor` on the training rows.

    Full-batch L-BFGS on the outcomes' binary cross-entropy with a small L2 penalty on the age-band
    adjustments (bands with few rows stay near the shared weights). Only vital signs and the age band enter.
    """
    categorical, danger, outcomes = train_t[2], train_t[4], train_t[6]
    floor = PhysiologyFloor(danger.shape[1], encoder.cardinalities[encoder.age_band_column], encoder.age_band_column)
    optimiser = torch.optim.LBFGS(floor.parameters(), lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logit, _ = floor.logits(categorical, danger)
        loss = F.binary_cross_entropy_with_logits(logit, outcomes) + 1e-3 * floor.weight_band.pow(2).mean()
        loss.backward()
        return loss

    optimiser.step(closure)
    floor.requires_grad_(False)
    return floor.eval()


def train_triage(frame: pd.DataFrame, config: TriageTrainConfig, *, progress: bool = True) -> TrainedTriageModel:
    """Train, early-stop on validation loss, and calibrate by temperature scaling.

    Torch's global RNG is forked for the duration, so seeding here does not leak to the caller.
    See :func:`_train` for the parameters.
    """
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return _train(frame, config, progress=progress)


def _train(frame: pd.DataFrame, config: TriageTrainConfig, *, progress: bool) -> TrainedTriageModel:
    """Train, early-stop on validation loss, and calibrate by temperature scaling.

    Parameters
    ----------
    frame : pandas.DataFrame
        Validated training records with ``acuity`` (Int64, may be missing), ``admitted``, ``critical``
        and ``visit_id`` columns.
    config : TriageTrainConfig
        Hyper-parameters and the seed.
    progress : bool
        Show a progress bar over epochs.
    """
    torch.set_num_threads(config.threads)
    train_rows, val_rows = split_train_validation(frame, config.validation_fraction, config.seed)
    train, val = frame.iloc[train_rows], frame.iloc[val_rows]
    encoder = FeatureEncoder.fit(train, min_token_count=config.min_token_count, max_tokens=config.max_tokens)
    train_t = (*_tensors(encoder.transform(train)), *_labels(train))
    val_t = (*_tensors(encoder.transform(val)), *_labels(val))

    members, history, best_epochs = [], [], []
    for k in range(config.ensemble_size):
        torch.manual_seed(config.seed + 1000 * k)
        member, member_history, best_epoch = _fit_member(
            encoder,
            train_t,
            val_t,
            config,
            np.random.default_rng([config.seed, k]),
            progress,
            desc=f"triage member {k + 1}/{config.ensemble_size}",
        )
        members.append(member)
        history += [{"member": k, **row} for row in member_history]
        best_epochs.append(best_epoch)
    net = TriageEnsemble(members).eval()

    with torch.no_grad():
        acuity_logits, outcome_logits = net(*val_t[:5])
    acuity_labels, outcome_labels = val_t[5], val_t[6]
    has_level = acuity_labels >= 0
    acuity_t = (
        fit_temperature(acuity_logits[has_level], lambda z: F.cross_entropy(z, acuity_labels[has_level]))
        if bool(has_level.any())
        else 1.0
    )
    outcome_ts = [
        fit_temperature(
            outcome_logits[:, j], lambda z, j=j: F.binary_cross_entropy_with_logits(z, outcome_labels[:, j])
        )
        for j in range(len(OUTCOMES))
    ]
    log.info("temperatures: acuity %.3f, outcomes %s", acuity_t, [round(t, 3) for t in outcome_ts])
    floor = fit_physiology_floor(train_t, encoder, config)
    calibrated = CalibratedTriageNet(net, acuity_t, outcome_ts, floor).eval()
    return TrainedTriageModel(
        model=calibrated,
        encoder=encoder,
        acuity_temperature=acuity_t,
        outcome_temperatures=outcome_ts,
        train_ids=train["visit_id"].astype(str).tolist(),
        validation_ids=val["visit_id"].astype(str).tolist(),
        history=history,
        best_epochs=best_epochs,
    )
