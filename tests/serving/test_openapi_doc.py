"""The committed OpenAPI description (docs/openapi.json) is the one the service serves."""

from __future__ import annotations

import json
from pathlib import Path

from serving.api.app import openapi_document

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_matches_the_service():
    served = json.loads(json.dumps(openapi_document(), sort_keys=True))
    assert DOC.is_file(), "run `vigil openapi` to write docs/openapi.json"
    assert json.loads(DOC.read_text()) == served, "docs/openapi.json is stale: run `vigil openapi`"
    assert "/v1/triage" in served["paths"] and "/v1/imaging/second-read" in served["paths"]
