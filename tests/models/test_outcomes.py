"""The outcome a site feeds back (models.outcomes): strict validation, each error naming its field."""

from __future__ import annotations

import pytest

from models.errors import InputValidationError
from models.outcomes import validate_outcome

OK = {"audit_id": 3, "observed_utc": "2026-12-07T10:30:00Z", "triage": {"admitted": True}}


def test_a_valid_triage_outcome_is_kept_in_canonical_form():
    outcome = validate_outcome({**OK, "triage": {"final_acuity": 2, "admitted": False, "died_in_ed": None}})
    assert (outcome.task, outcome.audit_id, outcome.request_id) == ("triage", 3, None)
    assert outcome.observed_utc == "2026-12-07T10:30:00.000Z"
    assert outcome.values == {"admitted": False, "final_acuity": 2}  # a null is "not given"


def test_a_valid_imaging_outcome_keeps_the_vocabulary_order():
    raw = {"request_id": "r-1", "observed_utc": "2026-12-07T10:30:00+00:00", "imaging": {}}
    raw["imaging"] = {"findings": {"pneumothorax": 1, "effusion": 0}}
    outcome = validate_outcome(raw)
    assert (outcome.task, outcome.request_id) == ("imaging", "r-1")
    assert list(outcome.values["findings"]) == ["effusion", "pneumothorax"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"colour": "red"}, "colour", "unknown field"),
        ({"request_id": "r"}, "audit_id", "exactly one of 'audit_id', 'request_id' and 'sop_instance_uid'"),
        ({"audit_id": None}, "audit_id", "exactly one of 'audit_id', 'request_id' and 'sop_instance_uid'"),
        ({"audit_id": None, "sop_instance_uid": "1.2.3"}, "sop_instance_uid", "links an imaging outcome"),
        ({"audit_id": 0}, "audit_id", "integer >= 1"),
        ({"audit_id": True}, "audit_id", "integer >= 1"),
        ({"observed_utc": "yesterday"}, "observed_utc", "ISO-8601"),
        ({"observed_utc": "2026-12-07T10:30:00"}, "observed_utc", "UTC"),
        ({"observed_utc": "2026-12-07T10:30:00+01:00"}, "observed_utc", "UTC"),
        ({"triage": None}, "triage", "exactly one of 'triage'"),
        ({"imaging": {"findings": {"effusion": 1}}}, "triage", "exactly one of 'triage'"),
        ({"triage": {}}, "triage", "at least one"),
        ({"triage": {"admitted": 1}}, "triage.admitted", "true or false"),
        ({"triage": {"final_acuity": 6}}, "triage.final_acuity", "1-5"),
        ({"triage": {"discharged": True}}, "triage.discharged", "unknown triage outcome"),
        ({"triage": {"died_in_ed": True, "critical_care": False}}, "triage.critical_care", "death in the ED"),
    ],
)
def test_each_problem_names_its_field(change, field, words):
    with pytest.raises(InputValidationError) as caught:
        validate_outcome({**OK, **change}, where="outcomes[4].")
    assert caught.value.field == f"outcomes[4].{field}" and words in caught.value.message


@pytest.mark.parametrize(
    ("imaging", "field", "words"),
    [
        ({"findings": {"fracture": 1}}, "imaging.findings.fracture", "unknown finding"),
        ({"findings": {"effusion": 2}}, "imaging.findings.effusion", "0 or 1"),
        ({"findings": {"effusion": True}}, "imaging.findings.effusion", "0 or 1"),
        ({"findings": {}}, "imaging.findings", "at least one"),
        ({"labels": {}}, "imaging", "findings"),
    ],
)
def test_each_imaging_problem_names_its_field(imaging, field, words):
    raw = {"audit_id": 1, "observed_utc": "2026-12-07T10:30:00Z", "imaging": imaging}
    with pytest.raises(InputValidationError) as caught:
        validate_outcome(raw)
    assert caught.value.field == field and words in caught.value.message


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(InputValidationError, match="JSON object") as caught:
        validate_outcome([OK])
    assert caught.value.field == "body"


def test_an_imaging_outcome_may_name_the_image_by_its_sop_instance_uid():
    raw = {"sop_instance_uid": "1.2.840.10008.99.7", "observed_utc": "2026-12-07T10:30:00Z"}
    outcome = validate_outcome({**raw, "imaging": {"findings": {"effusion": 1}}})
    assert (outcome.sop_instance_uid, outcome.audit_id, outcome.link) == (
        "1.2.840.10008.99.7",
        None,
        "sop_instance_uid",
    )
    for bad in ("1.02.3", "1..2", "1.2.a", "9" * 65, 7):
        with pytest.raises(InputValidationError, match="DICOM UID") as caught:
            validate_outcome({**raw, "sop_instance_uid": bad, "imaging": {"findings": {"effusion": 1}}})
        assert caught.value.field == "sop_instance_uid"
