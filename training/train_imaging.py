"""Fit the chest X-ray network: masked multi-label training with augmentation, early stopping,
per-finding temperature scaling and operating thresholds chosen on validation data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.config_schema import validate_config
from models.imaging.net import (
    CalibratedChestXray,
    ChestXrayNet,
    emulate_saturation,
    orient,
    read_views,
    readings_per_image,
    saturation_tails,
)
from models.imaging.pixels import IMAGE_MEAN, IMAGE_STD, PIXEL_PATH_VERSION
from models.labels import IMAGING_FINDINGS
from models.operating_point import threshold_for_sensitivity
from training.config import ImagingTrainConfig
from training.data.imaging import ImagingDataset
from training.train_triage import fit_temperature

log = logging.getLogger(__name__)


@dataclass
class TrainedImagingModel:
    """The result of :func:`train_imaging`."""

    model: CalibratedChestXray
    temperatures: list[float]
    thresholds: dict[str, float]
    validation_sensitivity: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0

    def predict(self, images: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated probabilities [N, F] and heat maps [N, F, S, S] from torch (for parity checks)."""
        self.model.eval()
        batch_size = max(1, batch_size // readings_per_image(self.model.dihedral, self.model.tails))
        probs, maps = [], []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                x = torch.from_numpy(images[start : start + batch_size].astype(np.float32))
                p, m = self.model(x)
                probs.append(p.numpy())
                maps.append(m.numpy())
        return np.concatenate(probs), np.concatenate(maps)


def augment(x: torch.Tensor, config: ImagingTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-image random augmentation of prepared images ``[N, 1, S, S]``, every draw from ``generator``.

    In order: display-window saturation (``saturation_jitter``, with probability ``saturation_probability``: see
    :func:`saturate`); gamma (``gamma_jitter``: gamma = exp(U(-g, g)), on the display values in [0, 1], so black
    padding stays black); a random affine (``rotate_degrees``, ``scale_jitter``, ``translate_fraction``); contrast
    and brightness (``intensity_jitter``: gain 1 + U(-j, j) and bias U(-j, j), in normalised units); then
    orientation: with ``dihedral_invariance`` one of the eight orientations of the square at random (the exported
    model averages all eight), else a left-right flip with probability ``hflip_probability``. The findings are not
    lateralised, so flips and turns keep every label.
    """
    n = x.shape[0]
    if config.saturation_jitter > 0 and config.saturation_probability > 0:
        x = saturate(x, config, generator)
    if config.gamma_jitter > 0:
        gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * config.gamma_jitter)
        display = (x * IMAGE_STD + IMAGE_MEAN).clamp(0.0, 1.0)
        x = (display**gamma - IMAGE_MEAN) / IMAGE_STD
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(config.rotate_degrees)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * config.scale_jitter
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * config.translate_fraction * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pad with the normalised value of black (the pixel path pads with black too).
    background = x.amin(dim=(1, 2, 3), keepdim=True)
    out = F.grid_sample(x - background, grid, align_corners=False, padding_mode="zeros") + background
    gain = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * config.intensity_jitter
    bias = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * config.intensity_jitter
    out = out * gain + bias
    if config.dihedral_invariance:
        turns = torch.randint(0, 4, (n,), generator=generator)
        flips = torch.rand(n, generator=generator) < 0.5
    else:
        turns = torch.zeros(n, dtype=torch.long)
        flips = torch.rand(n, generator=generator) < config.hflip_probability
    for k in range(4):
        for flip in (False, True):
            rows = (turns == k) & (flips == flip)
            if (k or flip) and bool(rows.any()):
                out[rows] = orient(out[rows], k, flip)
    return out


def saturate(x: torch.Tensor, config: ImagingTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """What a narrower or shifted display window does to a film, as the model sees it after the pixel path.

    A window that saturates the darkest fraction ``s`` of a film's pixels (and ``t`` of its brightest) turns their
    gradient into one grey level; after mid-rank histogram equalisation (:mod:`models.imaging.pixels`) that is exactly:
    equalised values below ``s`` become ``s / 2`` and those above ``1 - t`` become ``1 - t / 2``, every other pixel
    unchanged. ``s`` and ``t`` are drawn from U(0, ``saturation_jitter``) for a fraction ``saturation_probability``
    of the images (each end independently with half that probability as well). Padding (display 0) stays black.
    Measured on the training films (display values, the safety suite's +-10 % window and +-20 % contrast): the
    darkest/brightest saturated fractions have median 0.07-0.10 and 99th percentile 0.24-0.31
    (docs/clinical_safety.md), hence the default 0.3.
    """
    n = x.shape[0]
    chosen = torch.rand(n, 1, 1, 1, generator=generator) < config.saturation_probability
    ends = torch.rand(n, 2, 1, 1, generator=generator)
    low_on = chosen & (ends[:, :1] < 0.75)  # mostly both ends, sometimes only one
    high_on = chosen & (ends[:, 1:] < 0.75)
    s = torch.rand(n, 1, 1, 1, generator=generator) * config.saturation_jitter * low_on
    t = torch.rand(n, 1, 1, 1, generator=generator) * config.saturation_jitter * high_on
    return emulate_saturation(x, s, t)


def _masked_bce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * mask
    return loss.sum() / mask.sum().clamp(min=1.0)


def mean_auroc(labels: np.ndarray, mask: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the findings that have both classes among their labelled rows (model selection)."""
    from sklearn.metrics import roc_auc_score

    values = []
    for j in range(labels.shape[1]):
        rows = mask[:, j] > 0
        y = labels[rows, j]
        if rows.any() and 0 < y.sum() < len(y):
            values.append(roc_auc_score(y, scores[rows, j]))
    return float(np.mean(values)) if values else float("nan")


def _logits(
    net: ChestXrayNet,
    images: np.ndarray,
    batch_size: int = 256,
    *,
    dihedral: bool = False,
    tails: tuple[float, ...] = (0.0,),
) -> torch.Tensor:
    """Logits of ``images``; with ``dihedral`` averaged over the eight orientations and over the saturation
    ``tails``, as the exported model does."""
    net.eval()
    device = next(net.parameters()).device
    batch_size = max(1, batch_size // readings_per_image(dihedral, tails))  # readings share one forward batch
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size].astype(np.float32)).to(device)
            out.append(read_views(net, x, dihedral, tails)[0])
    return torch.cat(out).cpu()


def train_imaging(data: ImagingDataset, config: ImagingTrainConfig, *, progress: bool = True) -> TrainedImagingModel:
    """Train on the ``train`` split, early-stop and calibrate on ``validation``.

    Torch's global RNG is forked for the duration, so seeding here does not leak to the caller.
    """
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        # Denormal floats slowed later epochs several-fold on CPU; flush them while training, then restore
        # torch's default (off).
        torch.set_flush_denormal(True)
        try:
            return _train(data, config, progress)
        finally:
            torch.set_flush_denormal(False)


def _train(data: ImagingDataset, config: ImagingTrainConfig, progress: bool) -> TrainedImagingModel:
    torch.set_num_threads(config.threads)
    train, val = data.split("train"), data.split("validation")
    if len(train.images) == 0 or len(val.images) == 0:
        raise ValueError("imaging data needs non-empty train and validation splits")
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # a GPU where one is available
    net = ChestXrayNet(len(IMAGING_FINDINGS), dropout=config.dropout).to(device)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.epochs)
    val_labels, val_mask = torch.from_numpy(val.labels), torch.from_numpy(val.mask)
    best_score, best_state, best_epoch, stale = -math.inf, None, 0, 0
    history: list[dict[str, float]] = []
    bar = tqdm(range(1, config.epochs + 1), desc="imaging training", unit="epoch", disable=not progress)
    for epoch in bar:
        net.train()
        order = rng.permutation(len(train.images))
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            x = augment(torch.from_numpy(train.images[idx].astype(np.float32)), config, generator).to(device)
            logits, _ = net(x)
            loss = _masked_bce(
                logits, torch.from_numpy(train.labels[idx]).to(device), torch.from_numpy(train.mask[idx]).to(device)
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.item()) * len(idx)
        scheduler.step()
        val_logits = _logits(net, val.images)
        val_loss = float(_masked_bce(val_logits, val_labels, val_mask).item())
        val_auroc = mean_auroc(val.labels, val.mask, val_logits.numpy())
        history.append(
            {"epoch": epoch, "train_loss": total / len(order), "val_loss": val_loss, "val_mean_auroc": val_auroc}
        )
        bar.set_postfix(train=f"{total / len(order):.4f}", val=f"{val_loss:.4f}", auroc=f"{val_auroc:.3f}")
        # Select on ranking, not loss: with few NIH labels the loss rises from overconfidence while ranking
        # still improves, and temperature scaling fixes calibration afterwards.
        score = val_auroc if math.isfinite(val_auroc) else -val_loss  # no finding with both classes: use loss
        if score > best_score + 1e-4:
            best_score, best_epoch, stale = val_auroc, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                log.info(
                    "imaging: early stop at epoch %d (best %d, val mean AUROC %.4f)", epoch, best_epoch, best_score
                )
                break
    assert best_state is not None  # at least one epoch ran
    net.load_state_dict(best_state)
    net = net.cpu().eval()  # exported and calibrated on CPU

    # Model selection above reads one orientation (cheap); temperatures and thresholds are fitted on what is exported.
    tails = saturation_tails(config.saturation_average)
    logits = _logits(net, val.images, dihedral=config.dihedral_invariance, tails=tails)
    temperatures = []
    for j in range(len(IMAGING_FINDINGS)):
        rows = val_mask[:, j] > 0
        if int(rows.sum()) < 10 or val_labels[rows, j].min() == val_labels[rows, j].max():
            temperatures.append(1.0)
            continue
        temperatures.append(
            fit_temperature(
                logits[rows, j], lambda z, j=j, rows=rows: F.binary_cross_entropy_with_logits(z, val_labels[rows, j])
            )
        )
    model = CalibratedChestXray(
        net, temperatures, config.image_size, dihedral=config.dihedral_invariance, tails=tails
    ).eval()
    trained = TrainedImagingModel(model, temperatures, {}, {}, history, best_epoch)
    probs, _ = trained.predict(val.images)
    for j, finding in enumerate(IMAGING_FINDINGS):
        val_rows = val.mask[:, j] > 0
        threshold, sensitivity = threshold_for_sensitivity(
            val.labels[val_rows, j], probs[val_rows, j], config.target_sensitivity
        )
        trained.thresholds[finding] = threshold
        trained.validation_sensitivity[finding] = sensitivity
    log.info(
        "imaging temperatures %s; thresholds %s",
        [round(t, 3) for t in temperatures],
        {k: round(v, 4) for k, v in trained.thresholds.items()},
    )
    return trained


def save_imaging_weights(trained: TrainedImagingModel, config: ImagingTrainConfig, path: Path) -> Path:
    """The trained network's torch weights with what is needed to rebuild the exported module (temperatures,
    operating thresholds, the config and the pixel path): logged with each run so that a version can be re-exported
    with other inference settings or fine-tuned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": trained.model.net.state_dict(),
            "temperatures": list(trained.temperatures),
            "thresholds": dict(trained.thresholds),
            "config": config.to_dict(),
            "findings": list(IMAGING_FINDINGS),
            "pixel_path_version": PIXEL_PATH_VERSION,
        },
        path,
    )
    return path


def load_imaging_weights(path: Path, *, tails: tuple[float, ...] | None = None) -> tuple[CalibratedChestXray, dict]:
    """Rebuild the calibrated module saved by :func:`save_imaging_weights` (``tails`` overrides the saved config's
    saturation average); returns it with the saved record."""
    record = torch.load(path, map_location="cpu", weights_only=True)
    config = validate_config(ImagingTrainConfig, record["config"], f"the training config saved in {path.name}")
    net = ChestXrayNet(len(record["findings"]), dropout=config.dropout)
    net.load_state_dict(record["state_dict"])
    chosen = saturation_tails(config.saturation_average) if tails is None else tails
    model = CalibratedChestXray(
        net.eval(), record["temperatures"], config.image_size, dihedral=config.dihedral_invariance, tails=chosen
    ).eval()
    return model, record
