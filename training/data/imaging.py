"""Chest X-ray datasets: NIH ChestX-ray14 (1,000 images at 64 px) and the Kermany paediatric set.

Both go through the one pixel path (:func:`models.imaging.image_file.load_image_for_model`: the dataset's view
checked as ViewPosition is, the quality gate, histogram equalisation, resize), exactly as DICOM does at serving
time. Splits are by patient and seeded: the NIH folder split leaks patients across train/valid/test and is ignored.

Labels are multi-label over :data:`models.labels.IMAGING_FINDINGS` with a mask: NIH images carry the NIH
findings and no pneumonia label (NIH's text-mined pneumonia label is a different construct from the
Kermany one, so it is masked), Kermany images carry pneumonia only.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from models.errors import DataSourceError, ImagingInputError
from models.imaging.image_file import load_image_for_model
from models.imaging.pixels import prepare_image
from models.imaging.quality import equalise_histogram
from models.labels import IMAGING_FINDINGS, NIH_LABELS_BY_FINDING

log = logging.getLogger(__name__)

NIH_DIR = Path("imaging/nih_cxr14_1000_64px")
KERMANY_DIR = Path("imaging/kermany_pediatric_cxr_224px/dataset/train")
SPLITS = ("train", "validation", "test")
_KERMANY_PATIENT = re.compile(r"^(person\d+)_|^((?:NORMAL2-)?IM-\d+)-")


@dataclass
class ImagingDataset:
    """Prepared images and multi-label targets with a mask; one row per image.

    ``images`` is float16 [N, 1, S, S] (the pixel path's normalised output); ``labels`` and ``mask`` are
    float32 [N, F] over :data:`IMAGING_FINDINGS`; ``meta`` has ``image_id``, ``patient_id``, ``source``,
    ``split``, ``sex``, ``age_years``, ``view``.
    """

    images: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    meta: pd.DataFrame
    source_files_digest: str
    notes: list[str] = field(default_factory=list)

    def subset(self, rows: np.ndarray) -> ImagingDataset:
        """Rows by position, sharing nothing mutable with the parent."""
        return ImagingDataset(
            self.images[rows],
            self.labels[rows],
            self.mask[rows],
            self.meta.iloc[rows].reset_index(drop=True),
            self.source_files_digest,
            list(self.notes),
        )

    def split(self, name: str) -> ImagingDataset:
        """One of train / validation / test."""
        return self.subset(np.flatnonzero(self.meta["split"].to_numpy() == name))


def patient_split(patients: np.ndarray, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Assign each row to train/validation/test by patient (all images of a patient in one split)."""
    unique = np.unique(patients)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_train = round(fractions[0] * len(unique))
    n_val = round(fractions[1] * len(unique))
    assignment = {}
    for rank, i in enumerate(order):
        assignment[unique[i]] = SPLITS[0] if rank < n_train else SPLITS[1] if rank < n_train + n_val else SPLITS[2]
    return np.array([assignment[p] for p in patients])


def _prepare_all(
    paths: list[Path], size: int, desc: str, progress: bool, views: list[str] | None = None
) -> tuple[np.ndarray, str]:
    """Every image through :func:`load_image_for_model`; a refusal stops loading with the file's name."""
    images = np.zeros((len(paths), 1, size, size), dtype=np.float16)
    digest = hashlib.sha256()
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=not progress)):
        data = path.read_bytes()
        digest.update(hashlib.sha256(data).digest())
        try:
            images[i] = load_image_for_model(data, size, view=views[i] if views is not None else None)
        except ImagingInputError as exc:
            raise DataSourceError(f"{path.name} was refused by the pixel path: {exc}") from exc
    return images, digest.hexdigest()


def nih_patient_split(frame: pd.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(patient ids, train/validation/test split) of the NIH label table's rows: by patient, 60/20/20.

    The one definition of the NIH split, for training and for the release's safety-suite films.
    """
    patients = frame["Patient ID"].astype(str).radd("nih-").to_numpy()
    return patients, patient_split(patients, (0.6, 0.2, 0.2), seed)


def load_nih(data_dir: Path, size: int, seed: int, *, progress: bool = False) -> ImagingDataset:
    """NIH ChestX-ray14 1,000-image subset with NIH labels, sex, age and view; re-split by patient (60/20/20)."""
    root = data_dir / NIH_DIR
    table = root / "derived" / "nih1000_joined_labels_demographics.csv"
    if not table.is_file():
        raise DataSourceError(f"NIH label table not found: {table} (set VIGIL_DATA_DIR to the data folder)")
    frame = pd.read_csv(table)
    start = time.perf_counter()
    images, digest = _prepare_all(
        [root / p for p in frame["staged_path"]],
        size,
        "NIH images",
        progress,
        views=frame["View Position"].astype(str).tolist(),
    )
    labels = np.zeros((len(frame), len(IMAGING_FINDINGS)), dtype=np.float32)
    mask = np.zeros_like(labels)
    for j, finding in enumerate(IMAGING_FINDINGS):
        columns = NIH_LABELS_BY_FINDING.get(finding)
        if columns:
            labels[:, j] = frame[[f"label_{c}" for c in columns]].to_numpy().max(axis=1)
            mask[:, j] = 1.0
    patients, split = nih_patient_split(frame, seed)
    meta = pd.DataFrame(
        {
            "image_id": frame["Image Index"].astype(str),
            "patient_id": patients,
            "source": "nih",
            "split": split,
            "sex": frame["Patient Gender"].map({"F": "female", "M": "male"}).fillna("unknown"),
            "age_years": frame["Patient Age"].astype(float),
            "view": frame["View Position"].astype(str),
        }
    )
    log.info(
        "loaded NIH: %d images, %d patients in %.1f s",
        len(meta),
        meta["patient_id"].nunique(),
        time.perf_counter() - start,
    )
    return ImagingDataset(images, labels, mask, meta, digest)


def kermany_patient_split(data_dir: Path, seed: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """(image paths, patient ids, train/validation/test split) of the Kermany training set: by patient, 70/15/15.

    The one definition of the Kermany split, for training and for the release's safety-suite films.

    Raises
    ------
    DataSourceError
        No images, or a file name without a patient id.
    """
    root = data_dir / KERMANY_DIR
    paths = sorted(root.glob("NORMAL/*.jpeg")) + sorted(root.glob("PNEUMONIA/*.jpeg"))
    if not paths:
        raise DataSourceError(f"Kermany images not found under {root} (set VIGIL_DATA_DIR to the data folder)")
    patients = []
    for path in paths:
        match = _KERMANY_PATIENT.match(path.name)
        if match is None:
            raise DataSourceError(f"unexpected Kermany file name (no patient id): {path.name}")
        patients.append("kermany-" + (match.group(1) or match.group(2)))
    patient_ids = np.array(patients)
    return paths, patient_ids, patient_split(patient_ids, (0.7, 0.15, 0.15), seed)


def load_kermany(data_dir: Path, size: int, seed: int, *, progress: bool = False) -> ImagingDataset:
    """Kermany paediatric training set (5,216 images); held-out parts split off by patient (70/15/15)."""
    paths, patient_ids, split = kermany_patient_split(data_dir, seed)
    start = time.perf_counter()
    images, digest = _prepare_all(paths, size, "Kermany images", progress)
    labels = np.zeros((len(paths), len(IMAGING_FINDINGS)), dtype=np.float32)
    mask = np.zeros_like(labels)
    j = IMAGING_FINDINGS.index("pneumonia")
    labels[:, j] = [1.0 if p.parent.name == "PNEUMONIA" else 0.0 for p in paths]
    mask[:, j] = 1.0
    meta = pd.DataFrame(
        {
            "image_id": [p.name for p in paths],
            "patient_id": patient_ids,
            "source": "kermany",
            "split": split,
            "sex": "unknown",
            "age_years": np.nan,  # children aged 1-5; no per-image age
            "view": "unknown",
        }
    )
    log.info(
        "loaded Kermany: %d images, %d patients in %.1f s",
        len(meta),
        meta["patient_id"].nunique(),
        time.perf_counter() - start,
    )
    return ImagingDataset(images, labels, mask, meta, digest)


def concatenate(parts: list[ImagingDataset]) -> ImagingDataset:
    """Stack datasets (same image size) into one."""
    return ImagingDataset(
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.mask for p in parts]),
        pd.concat([p.meta for p in parts], ignore_index=True),
        hashlib.sha256("".join(p.source_files_digest for p in parts).encode()).hexdigest(),
        [n for p in parts for n in p.notes],
    )


def synthetic_imaging(n: int, size: int, seed: int) -> ImagingDataset:
    """Seeded synthetic 'radiographs' whose findings are drawn as shapes the network can learn.

    For tests and for the no-data main job only; says nothing about clinical performance.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.zeros((n, 1, size, size), dtype=np.float16)
    labels = (rng.random((n, len(IMAGING_FINDINGS))) < 0.3).astype(np.float32)
    for i in range(n):
        img = 0.3 + 0.05 * rng.standard_normal((size, size))
        img += 0.4 * np.exp(-(((xx - 0.5) / 0.08) ** 2))  # mediastinum
        for j in np.flatnonzero(labels[i]):
            cx, cy = 0.2 + 0.6 * ((j * 37) % 7) / 7, 0.2 + 0.6 * ((j * 53) % 7) / 7
            # A mid-grey opacity (peak about 0.5 on 0.3 lung, below the 0.7 mediastinum), like consolidation: a
            # blob among the brightest tenth would be merged into one grey level by the pixel path (cxr-pixels/3).
            img += 0.2 * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / 0.004))
        images[i] = prepare_image(equalise_histogram(np.clip(img, 0, 1).astype(np.float32)), size)
    patients = np.array([f"syn-{i // 2}" for i in range(n)])
    meta = pd.DataFrame(
        {
            "image_id": [f"syn-{i}" for i in range(n)],
            "patient_id": patients,
            "source": "synthetic",
            "split": patient_split(patients, (0.6, 0.2, 0.2), seed),
            "sex": rng.choice(["female", "male"], n),
            "age_years": rng.integers(18, 90, n).astype(float),
            "view": rng.choice(["PA", "AP"], n),
        }
    )
    return ImagingDataset(
        images,
        labels,
        np.ones_like(labels),
        meta,
        f"synthetic-n{n}-seed{seed}",
        ["SYNTHETIC images: no clinical meaning"],
    )
