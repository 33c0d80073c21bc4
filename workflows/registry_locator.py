"""The MLflow registry as a source of served models: the composition root's locator for ``vigil serve`` and
``vigil dicom-node``.

Serving does not import training; this module gives it a locator that reads the registry through
:mod:`training.tracking`: the alias (``production`` by default) names the version, the version's tags carry the
ONNX sha256 and the release gate's record. A verified local cache serves the last released model while the
registry cannot be reached.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import ModelArtifactError, RegistryUnavailableError
from models.onnx_file import sha256_file
from models.registry import Tag
from serving.model_source import PASS, ModelLocator, ResolvedModel, Task, read_local_release, write_local_release

log = logging.getLogger(__name__)

GATE_PREFIX = Tag.GATE_PREFIX


#: MLflow's HTTP client retries 7 times with exponential back-off and a 120 s timeout by default: an unreachable
#: registry would hold start-up for minutes before the cache fallback. Serving uses these unless the user set them.
REGISTRY_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@dataclass
class RegistryLocator:
    """Models from the MLflow registry (``NAME@ALIAS`` or ``NAME/VERSION`` per task), with a verified local cache.

    Each process downloads into its own folder, so several workers never write the same file at once. Every
    released model resolved from the registry is copied, checksum verified, into ``cache_dir`` (one folder per
    reference, the :class:`serving.model_source.LocalFolderLocator` format). When the registry cannot be reached,
    the last released model cached for that reference is served instead, and its checksum is verified again as it
    is opened; with no cache the model is refused, saying why. A registry that answers "no such version" is
    obeyed: the cache is never used to serve what the registry no longer releases.
    """

    work_dir: Path
    refs: dict[Task, str]
    download_root: Path
    cache_dir: Path | None = None

    def locate(self, task: Task) -> ResolvedModel:
        from training.tracking import fetch_model_version

        ref = self.refs[task]
        try:
            record = fetch_model_version(ref, self.work_dir, download_root=self.download_root)
        except RegistryUnavailableError as exc:
            return self._from_cache(task, ref, exc)
        gate = {k.removeprefix(GATE_PREFIX): v for k, v in record.tags.items() if k.startswith(GATE_PREFIX)}
        sha = record.tags.get(Tag.ONNX_SHA256) or None
        if sha is None:
            raise ModelArtifactError(
                f"{record.name} version {record.version} has no onnx_sha256 tag: it cannot be "
                "verified, so it is not served"
            )
        resolved = ResolvedModel(
            task,
            record.name,
            record.version,
            record.onnx_path,
            sha,
            gate,
            f"registry models:/{ref.removeprefix('models:/')}",
        )
        self._cache(ref, resolved)
        return resolved

    def _cache_folder(self, ref: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / ref.removeprefix("models:/").replace("@", "@@").replace("/", "@v")

    def _cache(self, ref: str, resolved: ResolvedModel) -> None:
        """Keep a verified copy of a released model (an unreleased one is never cached)."""
        folder = self._cache_folder(ref)
        if folder is None or resolved.release_status != PASS:
            return
        try:
            cached = read_local_release(folder, resolved.name, resolved.task)
            if (cached.version, cached.expected_sha256, cached.release_gate) == (
                resolved.version,
                resolved.expected_sha256,
                resolved.release_gate,
            ) and sha256_file(cached.path) == cached.expected_sha256:
                return
        except ModelArtifactError:
            pass  # no cache yet, or an unreadable one: write it anew
        try:
            if sha256_file(resolved.path) != resolved.expected_sha256:
                return  # the holder refuses this file by its checksum; a bad copy is never cached
            write_local_release(folder, resolved)
            log.info(
                "cached %s version %s in %s (served if the registry becomes unreachable)",
                resolved.name,
                resolved.version,
                folder,
            )
        except OSError as exc:
            log.warning("could not cache %s version %s in %s: %s", resolved.name, resolved.version, folder, exc)

    def _from_cache(self, task: Task, ref: str, exc: RegistryUnavailableError) -> ResolvedModel:
        from training.tracking import parse_model_ref

        folder = self._cache_folder(ref)
        name = parse_model_ref(ref)[0]
        if folder is None or not (folder / f"{name}.release.json").is_file():
            raise RegistryUnavailableError(
                f"{exc}; no verified local cache of {ref} exists, so no {task} model is "
                "served until the registry can be reached"
            ) from exc
        cached = read_local_release(folder, name, task)
        stamp = _cached_utc(folder / f"{name}.release.json")
        log.warning(
            "%s; serving the cached release of %s instead: %s version %s (cached %s; its checksum is "
            "verified as it is opened)",
            exc,
            ref,
            cached.name,
            cached.version,
            stamp,
        )
        return dataclasses.replace(
            cached, origin=f"verified local cache {folder} of {ref} (registry unreachable; cached {stamp})"
        )

    def close(self) -> None:
        """Remove this process's download folder (the open sessions no longer need the files)."""
        shutil.rmtree(self.download_root, ignore_errors=True)


def _cached_utc(record: Path) -> str:
    try:
        return str(json.loads(record.read_text()).get("cached_utc", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


def build_locator(settings: Any) -> ModelLocator:
    """The locator the settings ask for: the registry (default, with its local cache) or a local ONNX folder."""
    from serving.api.app import default_locator

    if settings.model_source == "local":
        return default_locator(settings)
    download_root = Path(tempfile.mkdtemp(prefix=f"serve-{os.getpid()}-", dir=_ensure(settings.work_dir / "downloads")))
    return RegistryLocator(
        settings.work_dir.resolve(),
        {"triage": settings.triage_model, "imaging": settings.imaging_model},
        download_root,
        cache_dir=settings.work_dir.resolve() / "model-cache",
    )


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def bound_registry_retries() -> None:
    """Apply :data:`REGISTRY_HTTP_DEFAULTS` where the user has not set them (process entry points only)."""
    for name, value in REGISTRY_HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
