"""The only module that talks to MLflow.

Embedded default: a SQLite store and a local artefact folder under the work directory. Any tracking URI
(e.g. an MLflow server backed by PostgreSQL) by setting ``MLFLOW_TRACKING_URI`` / ``VIGIL_MLFLOW_URI``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.registry import CANDIDATE_ALIAS, PRODUCTION_ALIAS, TRIAGE_MODEL, Tag

log = logging.getLogger(__name__)


#: Tracking URIs this process gave mlflow.set_tracking_uri(). MLflow exports each as MLFLOW_TRACKING_URI, so a
#: later read of that variable would return whichever work folder was used last here, not the user's setting.
_EXPORTED_BY_US: set[str] = set()


def _use_tracking_uri(uri: str) -> None:
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before != uri:  # the user's own setting, when it is the one in use, stays the user's
        _EXPORTED_BY_US.add(uri)


def _user_tracking_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri in _EXPORTED_BY_US else uri


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs and artefacts go."""

    tracking_uri: str
    artifact_location: str
    experiment: str


def tracking_settings(work_dir: Path, experiment: str) -> TrackingSettings:
    """Resolve tracking settings: ``VIGIL_MLFLOW_URI`` or ``MLFLOW_TRACKING_URI``, else SQLite in ``work_dir``."""
    work_dir = work_dir.resolve()
    uri = os.environ.get("VIGIL_MLFLOW_URI") or _user_tracking_uri()
    if not uri:
        uri = f"sqlite:///{work_dir / 'mlflow.db'}"
    artifacts = os.environ.get("VIGIL_MLFLOW_ARTIFACTS") or (work_dir / "mlartifacts").as_uri()
    return TrackingSettings(tracking_uri=uri, artifact_location=artifacts, experiment=experiment)


def git_commit(repo_dir: Path) -> str:
    """The repository's HEAD commit, with ``-dirty`` when the tree has uncommitted changes; 'unknown' outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flatten nested metric dicts into MLflow metric names (non-finite values dropped)."""
    out: dict[str, Any] = {}
    _flatten("", metrics, out)
    return {k.replace(" ", "_"): v for k, v in out.items() if v == v and abs(v) != float("inf")}


@dataclass(frozen=True)
class RegisteredModel:
    """What the registry recorded for a logged model."""

    name: str
    version: str
    run_id: str
    model_uri: str
    alias: str


def log_onnx_model_run(
    settings: TrackingSettings,
    *,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    metrics: Mapping[str, Any],
    history: list[dict[str, float]],
    artifacts: list[Path],
    onnx_path: Path,
    registered_model_name: str,
    card_json: str,
) -> RegisteredModel:
    """Log one training run (triage or imaging) and register its ONNX model as a new version @candidate.

    Parameters
    ----------
    params : mapping
        Config keys and values (strings or numbers).
    tags : mapping
        Git commit, dataset digests, data source, synthetic flag and so on.
    metrics : mapping
        Nested evaluation metrics; flattened to ``a.b.c`` names.
    history : list of dict
        Per-epoch losses, logged as step metrics.
    artifacts : list of Path
        Files to attach (reports, plots, model card).
    """
    import mlflow
    import onnx
    from mlflow import MlflowClient

    _use_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(settings.experiment, artifact_location=settings.artifact_location)
    else:
        experiment_id = experiment.experiment_id
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tags(dict(tags))
        for row in history:
            step = int(row["epoch"])
            prefix = f"member{int(row['member'])}." if "member" in row else ""
            mlflow.log_metrics(
                {prefix + k: float(v) for k, v in row.items() if k not in ("epoch", "member")}, step=step
            )
        mlflow.log_metrics(flatten_metrics(metrics))
        for path in artifacts:
            mlflow.log_artifact(str(path))
        mlflow.log_text(card_json, "model_card.json")
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="model",
            registered_model_name=registered_model_name,
            onnx_execution_providers=["CPUExecutionProvider"],
            save_as_external_data=False,
            # What serving an ONNX model needs (onnx, onnxruntime, pinned to what is installed), stated rather than
            # inferred: MLflow's inference imports every installed distribution's metadata (about 3 s a run).
            pip_requirements=mlflow.onnx.get_default_pip_requirements(),
        )
        run_id = run.info.run_id
    version = str(info.registered_model_version)
    client.set_registered_model_alias(registered_model_name, CANDIDATE_ALIAS, version)
    client.set_model_version_tag(registered_model_name, version, Tag.ONNX_SHA256, tags.get(Tag.ONNX_SHA256, ""))
    log.info("registered %s version %s as @%s (run %s)", registered_model_name, version, CANDIDATE_ALIAS, run_id)
    return RegisteredModel(registered_model_name, version, run_id, info.model_uri, CANDIDATE_ALIAS)


def resolve_model_file(
    model: str, work_dir: Path, experiment: str = TRIAGE_MODEL, download_root: Path | None = None
) -> Path:
    """Turn an ``.onnx`` path or a registry URI (``models:/NAME@alias`` or ``models:/NAME/VERSION``) into a file.

    Registry files are downloaded under ``download_root`` (default ``work_dir/downloads``); processes that may
    download at the same moment (serving workers) each pass their own.

    Raises
    ------
    RegistryUnavailableError
        The registry could not be reached or read (a :class:`ModelArtifactError` too).
    ModelArtifactError
        The file does not exist, or the registry has no such model, or it holds no ONNX file.
    """
    from models.errors import ModelArtifactError

    if not model.startswith("models:/"):
        path = Path(model)
        if not path.is_file():
            raise ModelArtifactError(f"model file not found: {path}")
        return path
    import mlflow

    settings = tracking_settings(work_dir, experiment)
    _use_tracking_uri(settings.tracking_uri)
    name = model.replace("models:/", "").replace("@", "_at_").replace("/", "_")
    target = (download_root or work_dir / "downloads") / name
    with _registry_errors(settings.tracking_uri, f"registry has no model {model!r}"):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(target)))
    found = sorted(local.rglob("*.onnx"))
    if not found:
        raise ModelArtifactError(f"registry model {model!r} holds no .onnx file")
    return found[0]


@dataclass(frozen=True)
class ModelVersionRecord:
    """A registered model version with its ONNX file (downloaded) and the record of its training run."""

    name: str
    version: str
    run_id: str
    onnx_path: Path
    tags: dict[str, str]
    run_tags: dict[str, str]
    run_metrics: dict[str, float]


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME/VERSION``, ``NAME@ALIAS`` or ``models:/...`` -> (name, version, alias).

    Raises
    ------
    InputValidationError
        ``field="model"`` for anything else.
    """
    from models.errors import InputValidationError

    text = ref.removeprefix("models:/")
    if "@" in text:
        name, alias = text.split("@", 1)
        if name and alias:
            return name, None, alias
    elif "/" in text:
        name, version = text.split("/", 1)
        if name and version.isdigit():
            return name, version, None
    raise InputValidationError(
        "model", f"model must be NAME/VERSION or NAME@ALIAS (e.g. vigil-triage/3); got {ref[:80]!r}"
    )


#: MLflow error codes that mean "the registry answered: there is no such model, version or alias".
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a registry that cannot be reached raises besides MlflowException (imported only when needed)."""
    import requests
    import sqlalchemy.exc

    return (OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError)


@contextlib.contextmanager
def _registry_errors(uri: str, not_found: str) -> Iterator[None]:
    """Turn what a registry call raises into the two errors serving tells apart.

    The registry answered "no such model, version or alias": :class:`ModelArtifactError` (``not_found``, then
    MLflow's message). Anything else it or the transport raised: :class:`RegistryUnavailableError`.
    """
    from mlflow.exceptions import MlflowException

    from models.errors import ModelArtifactError, RegistryUnavailableError

    try:
        yield
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND_CODES:
            raise ModelArtifactError(f"{not_found}: {exc.message[:200]}") from exc
        raise RegistryUnavailableError(_unavailable(uri, exc, exc.message)) from exc
    except _transport_errors() as exc:
        raise RegistryUnavailableError(_unavailable(uri, exc, str(exc))) from exc


def _unavailable(uri: str, exc: BaseException, detail: str) -> str:
    return f"MLflow registry at {_mask_uri(uri)} is unreachable or failed: {type(exc).__name__}: {detail[:200]}"


def _mask_uri(uri: str) -> str:
    """The tracking URI without a password (``scheme://user:***@host``)."""
    import re

    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", uri)


def fetch_model_version(ref: str, work_dir: Path, download_root: Path | None = None) -> ModelVersionRecord:
    """Look a model version up in the registry and download its ONNX file (under ``download_root``, see
    :func:`resolve_model_file`).

    Raises
    ------
    RegistryUnavailableError
        The registry could not be reached or read (a :class:`ModelArtifactError` too).
    ModelArtifactError
        The registry answered: no such model, version or alias, or no ONNX file in it.
    """
    from mlflow import MlflowClient

    from models.errors import ModelArtifactError

    name, version, alias = parse_model_ref(ref)
    settings = tracking_settings(work_dir, name)
    _use_tracking_uri(settings.tracking_uri)
    with _registry_errors(settings.tracking_uri, f"registry has no model version {ref!r}"):
        client = MlflowClient(settings.tracking_uri)
        if alias:
            mv = client.get_model_version_by_alias(name, alias)
        else:
            assert version is not None  # parse_model_ref gives a version whenever it gives no alias
            mv = client.get_model_version(name, version)
        if not mv.run_id:  # registered by hand, not from a Vigil run: nothing to check it against
            raise ModelArtifactError(
                f"model version {name}/{mv.version} was not registered from a run; Vigil "
                "releases and serves only versions its own training runs registered"
            )
        run_id = str(mv.run_id)
        run = client.get_run(run_id)
    onnx_path = resolve_model_file(
        f"models:/{name}/{mv.version}", work_dir, experiment=name, download_root=download_root
    )
    return ModelVersionRecord(
        name, str(mv.version), run_id, onnx_path, dict(mv.tags), dict(run.data.tags), dict(run.data.metrics)
    )


def record_release_decision(
    work_dir: Path,
    record: ModelVersionRecord,
    *,
    status: str,
    policy_version: str,
    summary: str,
    reports: list[Path],
    promote: bool,
    extra_tags: Mapping[str, str] | None = None,
) -> None:
    """Write the gate result as model-version tags and run artefacts; move ``production`` only when ``promote``.

    The tags are the record serving checks before it loads a model (a model without
    ``release_gate.status == pass`` is refused). ``extra_tags`` (e.g. the safety-invariant summary) are set on
    the version as well.
    """
    from mlflow import MlflowClient

    settings = tracking_settings(work_dir, record.name)
    _use_tracking_uri(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    from datetime import UTC, datetime

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for key, value in {
        Tag.GATE_STATUS: status,
        Tag.GATE_POLICY_VERSION: policy_version,
        Tag.GATE_CHECKED_UTC: stamp,
        Tag.GATE_SUMMARY: summary[:4900],
        **(extra_tags or {}),
    }.items():
        client.set_model_version_tag(record.name, record.version, key, value)
    for path in reports:
        client.log_artifact(record.run_id, str(path), artifact_path=f"release_gate/v{record.version}-{stamp}")
    if promote:
        client.set_registered_model_alias(record.name, PRODUCTION_ALIAS, record.version)
        log.info("%s version %s is now @%s", record.name, record.version, PRODUCTION_ALIAS)
