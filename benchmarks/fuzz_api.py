"""Bad input: schemathesis against the service's own OpenAPI description, every operation, in-process.

The service is built as the serving tests build it (:func:`serving.api.app.create_app` on a local model folder whose
release records pass, a fresh SQLite key/audit store, one API key per scope and one with every scope) and driven
through Starlette's ``TestClient``: the whole ASGI stack (middleware, authentication, routes, error handlers, audit
writes) runs in this process and nothing listens on a socket. The models are small ones trained on synthetic data
exactly as the ``registered`` and ``model_folder`` fixtures of tests/conftest.py train them, or those of
``--model-dir``.

For every operation of the document the service serves at ``/openapi.json``, with hypothesis driving schemathesis's
generators (:meth:`schemathesis.APIOperation.as_strategy`):

* positive: ``--max-examples`` requests whose parameters and body follow the document, with the all-scope key (and
  an ``Accept`` drawn from the documented success media types, so every documented representation is requested);
* negative: ``--max-examples`` requests with at least one part that breaks the document (a body of the wrong type,
  a value out of range, a missing required parameter, a broken or missing API key);
* authentication (operations with a security requirement): ``--auth-examples`` positive requests each with no key,
  with a well-formed key that was never issued, and with a valid key lacking the route's scope (when the route
  needs one), which must answer 401, 401 and 403.

Every response goes through schemathesis's ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance`` and ``response_headers_conformance`` checks (a status,
media type or body the document does not declare is a failure, as is any 5xx, and so is an exception out of the
ASGI app. A generated request that no HTTP client could send is counted, not sent. The run is bounded by
``--time-budget`` (from its start, training included): after it, remaining examples are counted as skipped and not
sent.

The fast form of the same fuzzing is tests/serving/test_fuzz_openapi.py (it imports :func:`fuzz_operation` and
:func:`probe_auth` from here). Run from the repository root::

    .venv/bin/python benchmarks/fuzz_api.py [--model-dir FOLDER] [--max-examples 300]

Writes ``--out`` (Markdown, default docs/reliability_fuzz.md) and the same figures as JSON next to it; exits 1 when
any failure was found.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("fuzz_api")

REPO = Path(__file__).resolve().parents[1]
#: The base URL of the in-process client (Starlette's TestClient answers any host; this is its default).
BASE_URL = "http://testserver"
#: The schemathesis checks every response goes through.
CHECK_NAMES = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
#: Keys the fuzzed service issues: name -> scopes (as tests/serving/conftest.py issues them).
KEY_SCOPES: dict[str, tuple[str, ...]] = {
    "all": ("triage", "imaging", "admin"),
    "triage": ("triage",),
    "imaging": ("imaging",),
    "admin": ("admin",),
}
#: The scope each secured operation requires (None: any valid key). An oracle written from README.md's route table,
#: not read from the app: a route that lost its scope check fails the authentication probe.
ROUTE_SCOPES: dict[str, str | None] = {
    "POST /v1/triage": "triage",
    "POST /v1/triage/batch": "triage",
    "POST /cds-services/{service_id}": "triage",
    "POST /v1/imaging/second-read": "imaging",
    "POST /dicomweb/studies": "imaging",
    "POST /dicomweb/studies/{study}": "imaging",
    "GET /v1/imaging/flags": "imaging",
    "GET /metrics": "admin",
    "POST /v1/admin/reload": "admin",
    "GET /v1/models": None,
}
#: A well-formed Vigil key (``vgl_<key_id>_<secret>``) that no store ever issued.
UNKNOWN_KEY = "vgl_" + "q" * 12 + "_" + "x" * 43
MULTIPART_BOUNDARY = "vigil-fuzz-3f1b9c"
STOW_MEDIA_TYPE = 'multipart/related; type="application/dicom"'
_MODEL_FILES = ("vigil-triage.onnx", "vigil-triage.release.json", "vigil-cxr.onnx", "vigil-cxr.release.json")
_AUTH_HEADERS = ("authorization", "x-api-key")
_MAX_FAILURES_KEPT = 50


# ----------------------------------------------------------------------------------------------- schemathesis glue
def register_serializers() -> None:
    """Teach schemathesis to send ``application/dicom`` and ``multipart/related; type="application/dicom"``
    (DICOMweb STOW-RS) bodies, which it has no serializer for.

    A generated binary body goes as it is, or as the one ``application/dicom`` part of a multipart/related body
    whose boundary :func:`send` puts in the Content-Type; anything else (negative data: a number, an object) is sent
    as its JSON text, which is neither DICOM nor multipart. Idempotent.
    """
    import schemathesis

    # Registered under the document's exact media type: under a bare "multipart/related" schemathesis would send
    # that as the Content-Type and drop the type parameter the route requires.
    @schemathesis.serializer(STOW_MEDIA_TYPE)
    def _multipart_related(ctx: Any, value: Any) -> bytes:
        data = value if isinstance(value, bytes) else getattr(value, "data", None)  # schemathesis's Binary wrapper
        if not isinstance(data, bytes):
            return json.dumps(value, default=str).encode()
        head = f"--{MULTIPART_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        return head + data + f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()

    @schemathesis.serializer("application/dicom")
    def _dicom(ctx: Any, value: Any) -> bytes:
        data = value if isinstance(value, bytes) else getattr(value, "data", None)
        return data if isinstance(data, bytes) else json.dumps(value, default=str).encode()


def checks() -> list[Callable[..., Any]]:
    """The schemathesis check functions named in :data:`CHECK_NAMES`."""
    from schemathesis import checks as st_checks

    return [getattr(st_checks, name) for name in CHECK_NAMES]


def load_schema(client: Any, key: str) -> Any:
    """The schemathesis schema of the document the service serves, with ``key`` as the bearer token.

    With the token configured for the ``HTTPBearer`` scheme, positive cases carry ``Authorization: Bearer <key>``
    and negative cases may break or drop it (schemathesis negates security parameters like any other).
    """
    import schemathesis

    response = client.get("/openapi.json")
    response.raise_for_status()
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": key}}}})
    return schemathesis.openapi.from_dict(response.json(), config=config)


def operation_labels(document: Mapping[str, Any]) -> list[str]:
    """``"METHOD /path"`` of every operation of an OpenAPI document, in document order."""
    methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    return [
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item if method in methods
    ]


def get_operation(schema: Any, label: str) -> Any:
    method, path = label.split(" ", 1)
    return schema[path][method]


def success_media_types(operation: Any) -> list[str]:
    """The media types the document gives for the operation's 2xx responses (candidates for ``Accept``)."""
    found: list[str] = []
    for status, response in operation.definition.raw.get("responses", {}).items():
        if str(status).startswith("2"):
            found.extend(m for m in response.get("content", {}) if m not in found)
    return found


def synthetic_dicom() -> tuple[bytes, str]:
    """A small valid chest CR instance (64x64 MONOCHROME2, no patient data) and its StudyInstanceUID."""
    import io

    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    yy, xx = np.mgrid[0:64, 0:64]
    pixels = np.full((64, 64), 2200.0)  # soft tissue
    pixels[(np.abs(xx - 32) > 8) & (np.abs(xx - 32) < 27) & (yy > 8) & (yy < 56)] = 600.0  # dark lung fields
    pixels[np.abs(xx - 32) <= 7] = 3400.0  # bright mediastinum, as MONOCHROME2 shows it
    # A smooth vertical gradient gives the grey levels of a real film, so the image quality gate admits it and
    # the success path is fuzzed too.
    ds.PixelData = (pixels + 40 * np.sin(yy / 3.0) + 12 * yy).astype("<u2").tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue(), str(ds.StudyInstanceUID)


def known_inputs(dicom: bytes, study_uid: str) -> dict[str, list[dict[str, Any]]]:
    """Per operation, fixed parts (``as_strategy`` keyword arguments) of extra positive cases: values random
    generation practically never hits (the one CDS service id, a decodable DICOM instance and its study), so that
    the paths behind them (a scored CDS call, a second read in each media type, a stored instance) are fuzzed too."""
    return {
        "POST /cds-services/{service_id}": [{"path_parameters": {"service_id": "vigil-triage"}}],
        "POST /v1/imaging/second-read": [
            {"body": dicom, "media_type": "application/dicom"},
            {"body": {"file": dicom}, "media_type": "multipart/form-data"},
        ],
        "POST /dicomweb/studies": [{"body": dicom, "media_type": STOW_MEDIA_TYPE}],
        "POST /dicomweb/studies/{study}": [
            {"path_parameters": {"study": study_uid}},
            {"path_parameters": {"study": study_uid}, "body": dicom, "media_type": STOW_MEDIA_TYPE},
        ],
    }


def _header_bytes(headers: Mapping[str, str | bytes]) -> list[tuple[bytes, bytes]]:
    # Header values go over the wire as latin-1 octets (what a server would receive); httpx would insist on ASCII.
    return [(k.encode("latin-1"), v if isinstance(v, bytes) else v.encode("latin-1")) for k, v in headers.items()]


class UnsendableCase(Exception):
    """A generated request that no HTTP client could put on the wire (e.g. a control character in a header)."""


def send(client: Any, case: Any, *, accept: str | None = None, key: str | bool | None = True) -> Any:
    """Send one schemathesis case through ``client`` (a Starlette TestClient) and return its response.

    The case is serialized exactly as schemathesis serializes it for ``requests``, then prepared by ``requests``, so
    that the bytes are those schemathesis would put on a socket. ``key``: True keeps the case's own credentials,
    None strips them, a string replaces them with ``Authorization: Bearer <key>``.
    """
    import requests

    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    fields = {
        k: kwargs[k]
        for k in ("method", "url", "headers", "params", "cookies", "data", "json", "files", "auth")
        if k in kwargs
    }
    try:
        prepared = requests.Request(**fields).prepare()
    except (requests.exceptions.RequestException, ValueError, UnicodeError) as exc:
        raise UnsendableCase(f"{type(exc).__name__}: {exc}") from exc
    headers: dict[str, str | bytes] = dict(prepared.headers)
    if key is not True:
        headers = {k: v for k, v in headers.items() if k.lower() not in _AUTH_HEADERS}
        if isinstance(key, str):
            headers["Authorization"] = f"Bearer {key}"
    if accept is not None:
        headers = {k: v for k, v in headers.items() if k.lower() != "accept"}
        headers["Accept"] = accept
    if case.media_type == STOW_MEDIA_TYPE and not any(k.lower() == "content-type" for k in headers):
        # schemathesis leaves a multipart Content-Type to the encoder, which knows the boundary: here, ours
        headers["Content-Type"] = f"{STOW_MEDIA_TYPE}; boundary={MULTIPART_BOUNDARY}"
    try:
        wire_headers = _header_bytes(headers)
    except UnicodeError as exc:
        raise UnsendableCase(f"a header is not latin-1: {exc}") from exc
    body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    return client.request(prepared.method or case.method, prepared.url, content=body, headers=wire_headers)


# ----------------------------------------------------------------------------------------------- one operation
@dataclasses.dataclass
class OperationRecord:
    """What fuzzing one operation sent and what came back."""

    label: str
    requests: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    statuses: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    n_failures: int = 0
    failure_kinds: dict[str, int] = dataclasses.field(default_factory=lambda: collections.Counter())
    unsendable: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    def add_failure(self, kind: str, phase: str, case: Any, status: int | None, title: str, message: str) -> None:
        self.n_failures += 1
        self.failure_kinds[kind] += 1
        if len(self.failures) < _MAX_FAILURES_KEPT:
            self.failures.append(
                {
                    "kind": kind,
                    "phase": phase,
                    "status": status,
                    "title": title,
                    "message": message[:600],
                    "request": describe_case(case),
                }
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.label,
            "requests": dict(self.requests),
            "total_requests": self.total_requests,
            "statuses": dict(sorted(self.statuses.items())),
            "server_errors": self.server_errors(),
            "n_failures": self.n_failures,
            "failure_kinds": dict(self.failure_kinds),
            "failures": self.failures,
            "unsendable": self.unsendable,
            "skipped_after_time_budget": self.skipped,
            "seconds": round(self.seconds, 2),
        }


def describe_case(case: Any) -> dict[str, Any]:
    """A generated request as data for a report: never the API key (it is replaced by its header's name)."""
    headers = {
        k: ("<credential>" if k.lower() in _AUTH_HEADERS else str(v)[:80]) for k, v in (case.headers or {}).items()
    }
    return {
        "method": case.method,
        "path": case.formatted_path[:200],
        "query": repr(case.query)[:200],
        "headers": headers,
        "media_type": case.media_type,
        "body": repr(case.body)[:300],
    }


def _validate(record: OperationRecord, phase: str, case: Any, response: Any, expect: int | None = None) -> None:
    from schemathesis.errors import FailureGroup

    status = response.status_code
    record.statuses[str(status)] += 1
    try:
        case.validate_response(response, checks=checks())
    except FailureGroup as group:
        for failure in group.exceptions:
            record.add_failure(type(failure).__name__, phase, case, status, failure.title, failure.message)
    if expect is not None and status != expect:
        record.add_failure(
            "UnexpectedAuthStatus", phase, case, status, f"expected {expect}, got {status}", response.text[:300]
        )
    if expect == 401 and status == 401 and "www-authenticate" not in response.headers:
        record.add_failure("MissingChallenge", phase, case, status, "401 without WWW-Authenticate", "")


def _settings(max_examples: int, seed: int | None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as fixed_seed

    # Failures are collected, not raised (every response is checked and reported), so there is nothing to shrink;
    # health checks are off because slow, large or heavily filtered generation is expected of a fuzzer, not a bug.
    configured = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        func = configured(func)
        return fixed_seed(seed)(func) if seed is not None else func

    return apply


def _derived_seed(seed: int | None, *parts: str) -> int | None:
    if seed is None:
        return None
    return int.from_bytes(hashlib.sha256(":".join((str(seed), *parts)).encode()).digest()[:8], "big")


def _has_inputs(operation: Any) -> bool:
    return (operation.body is not None and len(operation.body) > 0) or any(True for _ in operation.iter_parameters())


def _drive(
    client: Any,
    record: OperationRecord,
    phase: str,
    cases: Any,
    *,
    examples: int,
    seed: int | None,
    deadline: float | None,
    accepts: list[str | None],
    key: str | bool | None = True,
    expect: int | None = None,
) -> None:
    """Send ``examples`` cases drawn from ``cases`` (each with an ``Accept`` from ``accepts``) and check each answer."""
    from hypothesis import given
    from hypothesis import strategies as st

    if deadline is not None and time.monotonic() > deadline:
        record.skipped += examples  # not even generated
        return

    @_settings(examples, _derived_seed(seed, record.label, phase))
    @given(case=cases, accept=st.sampled_from(accepts))
    def run(case: Any, accept: str | None) -> None:
        if deadline is not None and time.monotonic() > deadline:
            record.skipped += 1
            return
        try:
            response = send(client, case, accept=accept, key=key)
        except UnsendableCase as exc:
            record.unsendable += 1
            logger.debug("%s %s: not sendable: %s", record.label, phase, exc)
            return
        except Exception as exc:  # the app raised through the client: a crash, reported as a failure
            record.add_failure("Crash", phase, case, None, type(exc).__name__, str(exc))
            return
        record.requests[phase] += 1
        _validate(record, phase, case, response, expect=expect)

    run()


def fuzz_operation(
    client: Any,
    schema: Any,
    label: str,
    *,
    max_examples: int,
    record: OperationRecord | None = None,
    deadline: float | None = None,
    seed: int | None = None,
    known: list[dict[str, Any]] | None = None,
) -> OperationRecord:
    """Positive and negative generated requests against one operation; every response checked.

    Parameters
    ----------
    client : starlette.testclient.TestClient
        The service, in-process.
    schema : schemathesis schema
        From :func:`load_schema` (it carries the all-scope key).
    label : str
        ``"METHOD /path"``.
    max_examples : int
        Generated requests per mode (hypothesis may send fewer when the operation admits fewer distinct inputs).
    record : OperationRecord, optional
        Where to add the counts; a new one by default.
    deadline : float, optional
        ``time.monotonic()`` after which no more requests are sent (those examples count as skipped).
    seed : int, optional
        Makes the generated requests reproducible.
    known : list of dict, optional
        Fixed parts of extra positive cases (see :func:`known_inputs`), drawn as often as the generated ones.
    """
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    record = record or OperationRecord(label)
    operation = get_operation(schema, label)
    accepts: list[str | None] = [None, *success_media_types(operation)]
    started = time.perf_counter()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
            continue  # nothing to break: no parameter, no body, no security parameter
        cases = operation.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE and known:
            cases = st.one_of(cases, *(operation.as_strategy(generation_mode=mode, **fixed) for fixed in known))
        _drive(client, record, mode.value, cases, examples=max_examples, seed=seed, deadline=deadline, accepts=accepts)
    record.seconds += time.perf_counter() - started
    return record


def probe_auth(
    client: Any,
    schema: Any,
    label: str,
    keys: Mapping[str, str],
    *,
    examples: int,
    record: OperationRecord | None = None,
    deadline: float | None = None,
    seed: int | None = None,
) -> OperationRecord:
    """Positive requests to a secured operation with no key (401), an unknown key (401) and a key without the
    route's scope (403); every response also goes through the schemathesis checks.

    ``keys`` maps the names of :data:`KEY_SCOPES` to issued keys. An operation without a security requirement in
    the document is left alone.
    """
    from schemathesis import GenerationMode

    record = record or OperationRecord(label)
    operation = get_operation(schema, label)
    if not operation.definition.raw.get("security"):
        return record
    if label not in ROUTE_SCOPES:
        raise KeyError(f"{label} has a security requirement but no entry in ROUTE_SCOPES")
    scope = ROUTE_SCOPES[label]
    wrong = next((name for name, scopes in KEY_SCOPES.items() if scope is not None and scope not in scopes), None)
    probes: list[tuple[str, str | None, int]] = [("no_key", None, 401), ("unknown_key", UNKNOWN_KEY, 401)]
    if wrong is not None:
        probes.append(("wrong_scope", keys[wrong], 403))
    started = time.perf_counter()
    for phase, key, expect in probes:
        _drive(
            client,
            record,
            phase,
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            examples=examples,
            seed=seed,
            deadline=deadline,
            accepts=[None],
            key=key,
            expect=expect,
        )
    record.seconds += time.perf_counter() - started
    return record


# ----------------------------------------------------------------------------------------------- the service
def train_models(folder: Path, work: Path) -> Path:
    """Both models trained briefly on synthetic data, as tests/conftest.py's ``registered`` fixture trains them,
    and written to ``folder`` with passing release records, as its ``model_folder`` fixture writes them."""
    from models.triage.onnx import sha256_file
    from serving.model_source import ResolvedModel, write_local_release
    from training.config import load_imaging_config, load_triage_config
    from workflows.imaging import run_imaging
    from workflows.triage import run_triage

    saved = {
        k: os.environ.get(k) for k in ("VIGIL_WORK_DIR", "VIGIL_DATA_DIR", "MLFLOW_TRACKING_URI", "VIGIL_MLFLOW_URI")
    }
    os.environ["VIGIL_WORK_DIR"] = str(work)
    os.environ["VIGIL_DATA_DIR"] = str(work / "no-data-here")  # no real data: the synthetic generators
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("VIGIL_MLFLOW_URI", None)
    try:
        triage = run_triage(
            load_triage_config(
                overrides={"epochs": 3, "synthetic_train_n": 2000, "synthetic_test_n": 600, "bootstrap_resamples": 10}
            ),
            progress=False,
        )
        imaging = run_imaging(
            load_imaging_config(
                overrides={
                    "epochs": 2,
                    "patience": 2,
                    "synthetic_n": 200,
                    "image_size": 64,
                    "batch_size": 32,
                    "bootstrap_resamples": 10,
                }
            ),
            progress=False,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    gate = {
        "status": "pass",
        "policy_version": "test",
        "checked_utc": "2026-11-23T00:00:00Z",
        "summary": "test fixture",
    }
    for task, name, path in (
        ("triage", "vigil-triage", triage.onnx_path),
        ("imaging", "vigil-cxr", imaging.shipped_path),
    ):
        write_local_release(folder, ResolvedModel(task, name, "7", path, sha256_file(path), dict(gate), "fuzz"))
    return folder


@contextlib.contextmanager
def service(work: Path, model_dir: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on ``model_dir`` with a fresh SQLite store and the keys of :data:`KEY_SCOPES`: (client, keys)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.settings import ServingSettings
    from serving.store.database import Store

    cfg = ServingSettings(work_dir=work, model_source="local", model_dir=model_dir, threads=1)
    store = Store(cfg.store_url())
    store.create_schema()
    keys = {name: store.create_key(f"fuzz-{name}", list(scopes))[1] for name, scopes in KEY_SCOPES.items()}
    with TestClient(create_app(cfg, store=store), raise_server_exceptions=False) as client:
        yield client, keys


# ----------------------------------------------------------------------------------------------- the run
def git_state() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    diff = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return {"commit": head.stdout.strip(), "modified": diff.stdout.split()}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("schemathesis", "hypothesis", "fastapi", "starlette", "pydantic", "onnxruntime")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    register_serializers()
    started = time.monotonic()
    git_start = git_state()
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as scratch:
        scratch_dir = Path(scratch)
        model_dir = args.model_dir
        train_s = 0.0
        if model_dir is None:
            logger.info("training the small synthetic models (as tests/conftest.py does)")
            t0 = time.monotonic()
            model_dir = train_models(scratch_dir / "models", scratch_dir / "train-work")
            train_s = time.monotonic() - t0
        missing = [f for f in _MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise SystemExit(f"--model-dir {model_dir}: missing {', '.join(missing)}")
        (scratch_dir / "serve").mkdir()
        fuzz_started = time.monotonic()
        deadline = started + args.time_budget
        with service(scratch_dir / "serve", model_dir) as (client, keys):
            schema = load_schema(client, keys["all"])
            labels = operation_labels(client.get("/openapi.json").json())
            known = known_inputs(*synthetic_dicom())
            records = []
            for i, label in enumerate(labels):
                record = OperationRecord(label)
                fuzz_operation(
                    client,
                    schema,
                    label,
                    max_examples=args.max_examples,
                    record=record,
                    deadline=deadline,
                    seed=args.seed,
                    known=known.get(label),
                )
                probe_auth(
                    client,
                    schema,
                    label,
                    keys,
                    examples=args.auth_examples,
                    record=record,
                    deadline=deadline,
                    seed=args.seed,
                )
                records.append(record)
                logger.info(
                    "[%d/%d] %-32s %5d requests  %s  failures %d  (%.0f s)",
                    i + 1,
                    len(labels),
                    label,
                    record.total_requests,
                    dict(sorted(record.statuses.items())),
                    record.n_failures,
                    record.seconds,
                )
        fuzz_s = time.monotonic() - fuzz_started
    rows = [r.as_dict() for r in records]
    statuses: collections.Counter[str] = collections.Counter()
    for r in records:
        statuses.update(r.statuses)
    return {
        "command": shlex.join([".venv/bin/python", "benchmarks/fuzz_api.py", *sys.argv[1:]]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_start,
        "git_at_end": git_state(),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        },
        "versions": versions(),
        "settings": {
            "max_examples": args.max_examples,
            "auth_examples": args.auth_examples,
            "seed": args.seed,
            "time_budget_s": args.time_budget,
            "models": "--model-dir" if args.model_dir else "trained",
            "checks": list(CHECK_NAMES),
        },
        "operations": rows,
        "totals": {
            "operations": len(rows),
            "requests": sum(r["total_requests"] for r in rows),
            "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(r["server_errors"] for r in rows),
            "failures": sum(r["n_failures"] for r in rows),
            "schema_failures": sum(
                n for r in rows for kind, n in r["failure_kinds"].items() if kind not in ("ServerError", "Crash")
            ),
            "unsendable": sum(r["unsendable"] for r in rows),
            "skipped_after_time_budget": sum(r["skipped_after_time_budget"] for r in rows),
        },
        "train_s": round(train_s, 1),
        "fuzz_s": round(fuzz_s, 1),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def render(result: dict[str, Any]) -> str:
    t, s = result["totals"], result["settings"]
    status_cols = sorted(t["statuses"], key=int)
    git = result["git"]
    lines = [
        "# Reliability: schemathesis against the service's own OpenAPI description",
        "",
        f"Command (repository root): `{result['command']}`  ",
        f"Date: {result['date_utc']}; commit `{git['commit']}`"
        + (f" plus uncommitted changes to {', '.join(f'`{m}`' for m in git['modified'])}" if git["modified"] else "")
        + (". **The working tree changed during the run**" if result["git_at_end"] != git else "")
        + ".  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".  ",
        f"Machine: {result['machine']['nproc']} CPUs, Python {result['machine']['python']}, Linux "
        f"{result['machine']['kernel']}; load average at the end {result['machine']['loadavg_end']}.  ",
        f"Took {result['elapsed_s']:.0f} s: {result['train_s']:.0f} s training the synthetic models"
        + (" (none: `--model-dir`)" if s["models"] == "--model-dir" else "")
        + f", {result['fuzz_s']:.0f} s fuzzing (time budget for the whole run: {s['time_budget_s']:.0f} s).",
        "",
        "## Result",
        "",
        f"* **{t['requests']} requests** over **{t['operations']} operations** (every operation of the document); "
        f"{t['skipped_after_time_budget']} examples skipped at the time budget; {t['unsendable']} generated requests "
        "no HTTP client could send (not counted as requests).",
        f"* **5xx responses: {t['server_errors']}.** **Check failures: {t['failures']}** "
        f"(of which not a 5xx or a crash: {t['schema_failures']}).",
        "* Status codes over the whole run: " + ", ".join(f"{k}: {v}" for k, v in t["statuses"].items()) + ".",
        "",
        "## Method",
        "",
        "* The service is `serving.api.app.create_app` on small models trained on synthetic data (as the test fixtures "
        "train them), a fresh SQLite key and audit store, one key per scope and one with every scope, driven "
        "in-process through Starlette's TestClient: middleware, authentication, routes, error handlers and audit "
        "writes all run; no socket.",
        "* The document is the one the service serves at `/openapi.json` (docs/openapi.json). Requests are "
        "generated by schemathesis (`APIOperation.as_strategy`) under hypothesis, serialized as schemathesis "
        "serializes them for `requests` and prepared by `requests`; `multipart/related` (STOW-RS) bodies wrap the "
        "generated bytes as one `application/dicom` part.",
        f"* Per operation: up to {s['max_examples']} **positive** requests (parameters and body as documented, the "
        "all-scope key, an `Accept` drawn from the documented success media types) and up to "
        f"{s['max_examples']} **negative** ones (some part breaks the document; on a secured operation that is often "
        "only the key, answered 401, and on one without parameters always); hypothesis sends fewer when an operation "
        "admits fewer distinct inputs (`GET /healthz` admits two: with and without `Accept: application/json`). "
        "Known values random generation practically never hits (the CDS service id, a decodable chest DICOM "
        "instance and its study UID) are drawn as often as generated ones in positive requests. For operations with "
        f"a security requirement, {s['auth_examples']} positive requests each with **no key** (must be 401 with "
        "`WWW-Authenticate`), an **unknown key** (401) and a **key without the route's scope** (403; not for "
        "`GET /v1/models`, which any key may call).",
        "* Every response goes through schemathesis's " + ", ".join(f"`{c}`" for c in s["checks"]) + ": any 5xx, "
        "a status code, media type, body or header the document does not declare for the operation is a failure; "
        "so is an exception out of the app or a wrong status from an authentication probe.",
        f"* Seed {s['seed']} (each operation and phase derives its own from it), so a rerun sends the same requests.",
        "",
        "## Per operation",
        "",
        "| operation | positive | negative | no key | unknown key | wrong scope | "
        + " | ".join(status_cols)
        + " | failures | s |",
        "|---|" + "---:|" * (5 + len(status_cols) + 2),
    ]
    for r in result["operations"]:
        req = r["requests"]
        lines.append(
            f"| `{r['operation']}` | "
            + " | ".join(str(req.get(p, 0)) for p in ("positive", "negative", "no_key", "unknown_key", "wrong_scope"))
            + " | "
            + " | ".join(str(r["statuses"].get(c, "")) for c in status_cols)
            + f" | {r['n_failures']} | {r['seconds']:.0f} |"
        )
    lines += ["", "## Failures", ""]
    failed = [r for r in result["operations"] if r["n_failures"]]
    if not failed:
        lines.append(
            "None: no 5xx, no crash, and every response matched the status codes, media types and schemas "
            "the document declares."
        )
    for r in failed:
        lines.append(f"### `{r['operation']}`: {r['n_failures']}")
        lines.append("")
        for f in r["failures"][:10]:
            lines.append(
                f"* {f['phase']}: {f['kind']} ({f['title']}), status {f['status']}; request "
                f"`{json.dumps(f['request'])[:400]}`; {f['message'][:300]!r}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a local model folder (vigil-triage.onnx, vigil-cxr.onnx and their .release.json) to "
        "serve instead of training the small synthetic models",
    )
    parser.add_argument(
        "--max-examples", type=int, default=300, help="generated requests per operation and mode (positive, negative)"
    )
    parser.add_argument(
        "--auth-examples", type=int, default=10, help="requests per operation for each authentication probe"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=570.0,
        help="seconds from the start (training included) after which no more requests are sent",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability_fuzz.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "httpx2", "vigil.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    t = result["totals"]
    print(
        f"{t['requests']} requests over {t['operations']} operations: {t['server_errors']} 5xx, "
        f"{t['failures']} failures; wrote {args.out} and {args.out.with_suffix('.json')} in "
        f"{result['elapsed_s']:.0f} s"
    )
    return 1 if t["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
