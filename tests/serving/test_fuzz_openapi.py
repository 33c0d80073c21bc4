"""Bad input: schemathesis against the service's own OpenAPI description (issue #7), the fast form.

Every operation of the document the service serves gets generated requests, positive and negative, and every
response must pass schemathesis's checks: no 5xx, and the status code, media type and body the document declares
for it. Every secured operation is called without a key, with an unknown key and with a key lacking its scope: 401,
401, 403, never a 5xx. The long run (thousands of requests, figures in docs/reliability_fuzz.md) is
``benchmarks/fuzz_api.py``; both use the fuzzing code of tests/fuzzing.py, so the two check the same things.

Below them, regression tests for what the fuzzer found.
"""

from __future__ import annotations

import json

import pytest

from serving.api.app import openapi_document
from serving.api.errors import PROBLEM_JSON
from tests.fuzzing import (
    CHECK_NAMES,
    KEY_SCOPES,
    ROUTE_SCOPES,
    OperationRecord,
    fuzz_operation,
    known_inputs,
    load_schema,
    operation_labels,
    probe_auth,
    register_serializers,
    synthetic_dicom,
)

pytestmark = pytest.mark.slow  # generated requests against the OpenAPI description

#: Generated requests per operation and mode (positive, negative): about 13 x 2 x 20 requests in all.
MAX_EXAMPLES = 20
#: Requests per secured operation for each of no key, unknown key, key without the scope.
AUTH_EXAMPLES = 3
OPERATIONS = operation_labels(openapi_document())
PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
#: Error statuses whose body is not a problem: STOW-RS's 409 (a DICOM JSON Store Instances Response) and /readyz's
#: 503 (the readiness report).
NOT_PROBLEMS = {("/dicomweb/studies", "409"), ("/dicomweb/studies/{study}", "409"), ("/readyz", "503")}


@pytest.fixture(scope="module")
def known() -> dict[str, list[dict[str, object]]]:
    register_serializers()
    return known_inputs(*synthetic_dicom())


@pytest.fixture
def schema(service, known):
    return load_schema(service.client, service.keys["all"])


def _report(record: OperationRecord) -> str:
    return f"{record.n_failures} failures, statuses {dict(record.statuses)}:\n" + "\n".join(
        json.dumps(f, default=str)[:1500] for f in record.failures[:5]
    )


def test_every_operation_is_fuzzed_and_every_secured_one_probed(service):
    document = service.client.app.openapi()
    assert operation_labels(document) == OPERATIONS and len(OPERATIONS) >= 13
    secured = {
        label
        for label in OPERATIONS
        if document["paths"][label.split(" ", 1)[1]][label.split(" ", 1)[0].lower()].get("security")
    }
    assert secured == set(ROUTE_SCOPES)
    assert set(service.keys) >= set(KEY_SCOPES)
    assert "not_a_server_error" in CHECK_NAMES and "response_schema_conformance" in CHECK_NAMES


@pytest.mark.parametrize("label", OPERATIONS)
def test_generated_requests_get_only_documented_answers(service, schema, known, label):
    record = fuzz_operation(service.client, schema, label, max_examples=MAX_EXAMPLES, known=known.get(label))
    assert record.requests["positive"] >= 1
    assert record.server_errors() == 0 and record.n_failures == 0, _report(record)
    assert record.unsendable <= record.total_requests // 4, "most generated requests could not be sent"


@pytest.mark.parametrize("label", sorted(ROUTE_SCOPES))
def test_requests_without_a_valid_key_are_refused(service, schema, label):
    record = probe_auth(service.client, schema, label, service.keys, examples=AUTH_EXAMPLES)
    probes = {"no_key", "unknown_key"} | ({"wrong_scope"} if ROUTE_SCOPES[label] else set())
    assert set(record.requests) == probes
    assert set(record.statuses) <= {"401", "403"} and record.n_failures == 0, _report(record)


def test_the_fuzzer_reports_a_5xx_an_undocumented_status_and_media_type():
    """The harness itself: on an app that breaks its own document, every kind of failure is reported."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.get("/items", responses={200: {"content": {"application/json": {}}}})
    def items(n: int = 0) -> object:
        if n % 3 == 1:
            raise RuntimeError("boom")
        if n % 3 == 2:
            return PlainTextResponse("not json")
        return JSONResponse({"n": n}, status_code=201 if n < 0 else 200)

    with TestClient(app, raise_server_exceptions=False) as client:
        record = fuzz_operation(client, load_schema(client, "unused"), "GET /items", max_examples=60, seed=1)
    kinds = {f["kind"] for f in record.failures}
    assert {"ServerError", "UndefinedContentType", "UndefinedStatusCode"} <= kinds, kinds
    assert record.server_errors() > 0 and record.n_failures >= record.server_errors()


# ----------------------------------------------------------------------------------------------- found by fuzzing
def test_every_error_response_is_documented_as_problem_json(service):
    """Errors go out as application/problem+json; the document said application/json (FastAPI's ``model=``)."""
    document = service.client.app.openapi()
    errors = [
        (path, method, status, response)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if int(status) >= 400 and (path, status) not in NOT_PROBLEMS
    ]
    assert len(errors) > 30
    for path, method, status, response in errors:
        assert response.get("content") == PROBLEM, f"{method.upper()} {path} {status}"
    assert document["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's 422 shape is never sent
    res = service.client.get("/v1/models")
    assert res.status_code == 401 and res.headers["content-type"] == PROBLEM_JSON


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n"),  # no boundary parameter
        (
            "multipart/form-data; boundary=x",
            b"".join(b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(5))
            + b"--x--\r\n",
        ),
    ],
)
def test_an_unreadable_multipart_form_is_a_422_naming_the_body(service, content_type, body):
    """Starlette answered these with an undocumented bare 400."""
    res = service.client.post(
        "/v1/imaging/second-read", content=body, headers=service.headers("imaging", **{"Content-Type": content_type})
    )
    assert res.status_code == 422 and res.headers["content-type"] == PROBLEM_JSON, res.text
    assert res.json()["errors"][0]["field"] == "body"
    assert "multipart form cannot be read" in res.json()["detail"]


@pytest.mark.parametrize("path", ["/dicomweb/studies", "/dicomweb/studies/1.2.3"])
def test_a_malformed_stow_body_is_a_documented_422(service, path):
    """The STOW-RS routes answer a body without parts 422, which their documentation did not declare."""
    res = service.client.post(
        path,
        content=b"not multipart",
        headers=service.headers(
            "imaging", **{"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
        ),
    )
    assert res.status_code == 422 and res.headers["content-type"] == PROBLEM_JSON
    template = "/dicomweb/studies/{study}" if path.endswith("1.2.3") else path
    assert service.client.app.openapi()["paths"][template]["post"]["responses"]["422"]["content"] == PROBLEM


def test_the_fhir_form_of_a_triage_result_is_documented(service):
    """``Accept: application/fhir+json`` answers a RiskAssessment, a media type the document did not list."""
    operation = service.client.app.openapi()["paths"]["/v1/triage"]["post"]
    assert "application/fhir+json" in operation["responses"]["200"]["content"]
    record = operation["requestBody"]["content"]["application/json"]["example"]
    res = service.client.post(
        "/v1/triage", json=record, headers=service.headers("triage", Accept="application/fhir+json")
    )
    assert res.status_code == 200 and res.headers["content-type"] == "application/fhir+json"
    assert res.json()["resourceType"] == "RiskAssessment"
