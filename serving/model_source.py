"""Where served models come from, and the checks every model passes before it answers a request.

A :class:`ModelLocator` turns a task ("triage" or "imaging") into a :class:`ResolvedModel`: a local ONNX file,
the sha256 its record says it must have, and its release-gate record. Two locators exist: the MLflow registry
(built by the ``vigil`` command, which composes ``training.tracking``; serving does not import training) and
:class:`LocalFolderLocator`, a folder of ``<name>.onnx`` files each with a ``<name>.release.json`` record.
The same folder format is the verified local cache the registry locator keeps (:func:`write_local_release`).

:class:`ModelHolder` loads through a locator, refuses a model without a passing release-gate record unless the
explicit override is set (logged, and flagged in every response), and swaps in a new version atomically: a
request already running keeps the model it started with, so a reload drops no request.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from models.errors import ModelArtifactError, VigilError
from models.imaging.onnx import ImagingOnnxModel
from models.intended_use import FindingRelease, IntendedUse, finding_release_from_json, intended_use_from_json
from models.labels import IMAGING_FINDINGS
from models.registry import IMAGING_MODEL, TRIAGE_MODEL
from models.triage.onnx import TriageOnnxModel
from serving.store.records import AuditRecord, utc_now

log = logging.getLogger(__name__)

Task = Literal["triage", "imaging"]
TASKS: tuple[Task, ...] = ("triage", "imaging")
DEFAULT_NAMES: dict[Task, str] = {"triage": TRIAGE_MODEL, "imaging": IMAGING_MODEL}
PASS = "pass"


class ModelUnavailableError(VigilError):
    """No model is loaded for a task (not released, not found, or failed its checks): answered with 503."""

    def __init__(self, task: str, reason: str) -> None:
        self.task = task
        self.reason = reason
        super().__init__(f"no {task} model is being served: {reason}")


@dataclass(frozen=True)
class ResolvedModel:
    """A model file ready to open, with the record it must match."""

    task: Task
    name: str
    version: str
    path: Path
    expected_sha256: str | None
    release_gate: dict[str, str]  # status, policy_version, checked_utc, summary (as recorded)
    origin: str  # e.g. "registry models:/vigil-triage@production" or "local /srv/models"

    @property
    def release_status(self) -> str:
        return self.release_gate.get("status", "not run")


class ModelLocator(Protocol):
    """Finds the model to serve for a task."""

    def locate(self, task: Task) -> ResolvedModel:
        """Resolve the model for ``task``; raises :class:`ModelArtifactError` when there is none."""
        ...


def read_local_release(folder: Path, name: str, task: Task) -> ResolvedModel:
    """Read ``<name>.onnx`` and ``<name>.release.json`` from ``folder``.

    A file without its release record resolves with status "not run" and no expected checksum: it can only be
    served by the override.
    """
    path = folder / f"{name}.onnx"
    if not path.is_file():
        raise ModelArtifactError(f"local model folder has no {name}.onnx")
    record_path = folder / f"{name}.release.json"
    if not record_path.is_file():
        return ResolvedModel(task, name, "local", path, None, {}, f"local {folder}")
    try:
        record = json.loads(record_path.read_text())
        gate = {str(k): str(v) for k, v in dict(record.get("release_gate", {})).items()}
        return ResolvedModel(
            task, name, str(record["version"]), path, str(record["onnx_sha256"]), gate, f"local {folder}"
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelArtifactError(f"{record_path.name} is not a valid release record: {type(exc).__name__}") from exc


def write_local_release(folder: Path, resolved: ResolvedModel) -> Path:
    """Copy a verified model and its record into ``folder`` (atomically: a reader never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{resolved.name}.onnx.{os.getpid()}.tmp"
    shutil.copyfile(resolved.path, tmp)
    os.replace(tmp, folder / f"{resolved.name}.onnx")
    record = {
        "name": resolved.name,
        "version": resolved.version,
        "onnx_sha256": resolved.expected_sha256,
        "release_gate": resolved.release_gate,
        "origin": resolved.origin,
        "cached_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    tmp_record = folder / f".{resolved.name}.release.json.{os.getpid()}.tmp"
    tmp_record.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp_record, folder / f"{resolved.name}.release.json")
    return folder / f"{resolved.name}.onnx"


@dataclass
class LocalFolderLocator:
    """Models from a folder: ``vigil-triage.onnx`` and ``vigil-cxr.onnx`` with their release records."""

    folder: Path
    names: dict[Task, str] = field(default_factory=lambda: dict(DEFAULT_NAMES))

    def locate(self, task: Task) -> ResolvedModel:
        return read_local_release(self.folder, self.names[task], task)


@dataclass(frozen=True)
class LoadedModel:
    """A model answering requests, with where it came from and whether the override let it in."""

    resolved: ResolvedModel
    runtime: Any  # TriageOnnxModel or ImagingOnnxModel
    unreleased_override: bool
    loaded_utc: str
    #: The release record's intended use, parsed (and so validated) once when the model is loaded.
    intended_use: IntendedUse | None = None

    def ref(self) -> dict[str, Any]:
        """The :class:`serving.api.schemas.ModelRef` of this model: with its intended use and the populations (and,
        for imaging, the findings) it is not validated for, as the release gate recorded them."""
        use = self.intended_use
        ref: dict[str, Any] = {
            "name": self.resolved.name,
            "version": self.resolved.version,
            "sha256": self.runtime.sha256,
            "release_status": self.resolved.release_status,
            "unreleased_override": self.unreleased_override,
            "synthetic_data": bool(self.runtime.card.synthetic_data),
            "intended_use": use.population if use is not None else None,
            "not_validated_for": [dict(p) for p in use.not_validated_for] if use is not None else [],
        }
        release = getattr(self.runtime, "release", None)
        if isinstance(release, FindingRelease):
            ref["findings_released"] = {f: p.description for f, p in release.released.items()}
            ref["findings_not_validated"] = dict(release.not_validated)
        return ref

    def audit_record(
        self, *, request_id: str, client: str, route: str, input_sha256: str, output: dict[str, Any], status: int = 200
    ) -> AuditRecord:
        """The audit record of one prediction by this model (HTTP routes and the DICOM node alike)."""
        ref = self.ref()
        return AuditRecord(
            request_id=request_id,
            time_utc=utc_now(),
            client=client,
            route=route,
            model_name=ref["name"],
            model_version=ref["version"] + (" (UNRELEASED override)" if ref["unreleased_override"] else ""),
            model_sha256=ref["sha256"],
            input_sha256=input_sha256,
            output=output,
            status=status,
        )


_RUNTIMES: dict[Task, Callable[..., Any]] = {"triage": TriageOnnxModel, "imaging": ImagingOnnxModel}


class ModelHolder:
    """The models of one process; loads, checks and swaps them.

    Parameters
    ----------
    locator : ModelLocator
        Where models come from.
    allow_unreleased : bool
        Serve a model whose release-gate status is not "pass" (logged at WARNING, flagged in responses).
    threads : int
        onnxruntime intra-op threads per session.
    tasks : tuple of str
        The tasks this process serves.
    """

    def __init__(
        self, locator: ModelLocator, *, allow_unreleased: bool, threads: int, tasks: tuple[Task, ...] = TASKS
    ) -> None:
        self.locator = locator
        self.allow_unreleased = allow_unreleased
        self.threads = threads
        self.tasks = tasks
        self._models: dict[Task, LoadedModel] = {}
        self._errors: dict[Task, str] = {t: "not loaded yet" for t in tasks}
        self._lock = threading.Lock()

    def _open(self, resolved: ResolvedModel) -> LoadedModel:
        task = resolved.task
        override = False
        if resolved.release_status != PASS:
            if not self.allow_unreleased:
                raise ModelArtifactError(
                    f"{resolved.name} {resolved.version} has no passing release-gate record (status "
                    f"{resolved.release_status!r}); refused. Release it with `vigil release`, or set "
                    "VIGIL_ALLOW_UNRELEASED=true to serve it for evaluation only (logged and flagged)"
                )
            override = True
            log.warning(
                "OVERRIDE: serving %s %s whose release-gate status is %r (VIGIL_ALLOW_UNRELEASED); every "
                "response and audit record is flagged unreleased",
                resolved.name,
                resolved.version,
                resolved.release_status,
            )
        use = intended_use_from_json(resolved.release_gate.get("intended_use"))
        extra: dict[str, Any] = {}
        if task == "imaging":
            extra["release"] = finding_release_from_json(resolved.release_gate.get("findings"), IMAGING_FINDINGS)
            if extra["release"] is None and not override:
                # Released before finding-level release existed: the gate then released all findings or none.
                extra["release"] = FindingRelease.everything(
                    IMAGING_FINDINGS, "released as a whole (a release record from before finding-level release)"
                )
        runtime = _RUNTIMES[task](
            resolved.path, threads=self.threads, expected_sha256=resolved.expected_sha256, **extra
        )
        if resolved.expected_sha256 is None and not override:  # pragma: no cover - a passing record has a sha
            raise ModelArtifactError(f"{resolved.name} has no recorded checksum")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        log.info(
            "loaded %s model %s version %s (sha256 %s..., %s, %d threads)",
            task,
            resolved.name,
            resolved.version,
            runtime.sha256[:12],
            resolved.origin,
            self.threads,
        )
        return LoadedModel(resolved, runtime, override, stamp, use)

    def load_all(self) -> None:
        """Load every task's model; a task that fails stays unavailable (503) with the reason kept."""
        for task in self.tasks:
            self.reload(task)

    def reload(self, task: Task) -> dict[str, Any]:
        """Load the task's current model and swap it in; on failure keep the model being served.

        Returns what happened: ``{"task", "status": "loaded"|"unchanged"|"failed", "version", "reason"}``.
        """
        try:
            resolved = self.locator.locate(task)
            with self._lock:
                current = self._models.get(task)
            if (
                current is not None
                and current.resolved.version == resolved.version
                and current.resolved.expected_sha256 == resolved.expected_sha256
                and current.resolved.release_gate == resolved.release_gate
            ):
                return {"task": task, "status": "unchanged", "version": resolved.version, "reason": None}
            loaded = self._open(resolved)
        except VigilError as exc:
            with self._lock:
                kept = self._models.get(task)
                if kept is None:
                    self._errors[task] = str(exc)
            log.error("%s model not loaded: %s%s", task, exc, "; still serving the previous one" if kept else "")
            return {
                "task": task,
                "status": "failed",
                "reason": str(exc),
                "version": kept.resolved.version if kept else None,
            }
        with self._lock:
            previous = self._models.get(task)
            self._models[task] = loaded
            self._errors.pop(task, None)
        if previous is not None:
            log.info("%s model swapped: version %s -> %s", task, previous.resolved.version, loaded.resolved.version)
        return {"task": task, "status": "loaded", "version": loaded.resolved.version, "reason": None}

    def get(self, task: Task) -> LoadedModel:
        """The model serving ``task`` now; raises :class:`ModelUnavailableError`."""
        with self._lock:
            model = self._models.get(task)
            if model is None:
                raise ModelUnavailableError(task, self._errors.get(task, "this service does not serve it"))
            return model

    def status(self) -> dict[Task, tuple[LoadedModel | None, str | None]]:
        """Per task: the loaded model (or None) and the reason when none is loaded."""
        with self._lock:
            return {t: (self._models.get(t), self._errors.get(t)) for t in self.tasks}
