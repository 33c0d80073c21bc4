"""Schemathesis against the service's own OpenAPI description: the fuzzing harness.

Shared by tests/serving/test_fuzz_openapi.py (the fast form, in the suite) and benchmarks/fuzz_api.py (the long
run whose figures are docs/reliability_fuzz.md), so that the two check the same things. The client is a Starlette
``TestClient`` on the app: the whole ASGI stack (middleware, authentication, routes, error handlers, audit writes)
runs in-process and nothing listens on a socket.

For one operation of the document the service serves at ``/openapi.json``, with hypothesis driving schemathesis's
generators (:meth:`schemathesis.APIOperation.as_strategy`), :func:`fuzz_operation` sends

* positive: ``max_examples`` requests whose parameters and body follow the document, with the all-scope key (and
  an ``Accept`` drawn from the documented success media types, so every documented representation is requested);
* negative: ``max_examples`` requests with at least one part that breaks the document (a body of the wrong type,
  a value out of range, a missing required parameter, a broken or missing API key);

and :func:`probe_auth` (operations with a security requirement) sends ``examples`` positive requests each with no
key, with a well-formed key that was never issued, and with a valid key lacking the route's scope (when the route
needs one), which must answer 401, 401 and 403.

Every response goes through schemathesis's ``not_a_server_error``, ``status_code_conformance``,
``content_type_conformance``, ``response_schema_conformance`` and ``response_headers_conformance`` checks: a status,
media type or body the document does not declare is a failure, as is any 5xx and any exception out of the ASGI app.
A generated request that no HTTP client could send is counted, not sent. After a ``deadline``, the remaining
examples are counted as skipped and not sent.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

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
    "all": ("triage", "imaging", "outcomes", "admin"),
    "triage": ("triage",),
    "imaging": ("imaging",),
    "outcomes": ("outcomes",),
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
    "POST /v1/outcomes": "outcomes",
    "POST /v1/outcomes/batch": "outcomes",
    "GET /metrics": "admin",
    "POST /v1/admin/reload": "admin",
    "GET /v1/models": None,
}
#: A well-formed Vigil key (``vgl_<key_id>_<secret>``) that no store ever issued.
UNKNOWN_KEY = "vgl_" + "q" * 12 + "_" + "x" * 43
MULTIPART_BOUNDARY = "vigil-fuzz-3f1b9c"
STOW_MEDIA_TYPE = 'multipart/related; type="application/dicom"'
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
