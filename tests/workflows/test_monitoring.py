"""Monitoring after release (workflows.monitoring): what the service answered per model version and group, and,
with outcomes fed back, the release gate's audit and verdict per group."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fairness.policy import load_policy
from serving.store.predictions import PredictionRow
from tests.serving.records import WELL
from workflows.monitoring import monitor

SINCE, UNTIL = "2026-12-01T00:00:00Z", "2026-12-08T00:00:00Z"


def _row(
    seq: int, level: int, p: float, groups: dict | None, outcome: dict | None, version: str = "3"
) -> PredictionRow:
    output = {
        "acuity": {"level": level},
        "risks": {"admitted": {"probability": p}, "critical": {"probability": p / 4}},
        "flags": {
            "news2_floor_raised_level": level == 2,
            "safety_floor_raised_level": level <= 2,
            "missing_inputs": ["spo2"] if seq % 10 == 0 else [],
        },
    }
    return PredictionRow(
        seq,
        "2026-12-07T10:00:00.000Z",
        "k",
        "vigil-triage",
        version,
        output,
        groups,
        outcome,
        "triage" if outcome else None,
    )


def _population(n: int = 1200, under_triaged: str | None = None, seed: int = 0) -> list[PredictionRow]:
    """Admissions that follow the predicted risk; final acuity 2 for the admitted, 4 otherwise; the model's level
    matches, except for ``under_triaged`` patients (sex) whose admitted visits it sends to level 4."""
    rng = np.random.default_rng(seed)
    rows = []
    for seq in range(1, n + 1):
        sex = "female" if seq % 2 else "male"
        band = ("15-24", "25-44", "45-64", "65-74")[seq % 4]
        p = float(rng.uniform(0.05, 0.95))
        admitted = bool(rng.random() < p)
        level = 2 if admitted else 4
        if under_triaged == sex and admitted:
            level = 4
        outcome = {"admitted": admitted, "final_acuity": 2 if admitted else 4}
        rows.append(_row(seq, level, p, {"sex": sex, "age_band": band, "ethnicity": None, "site": "north"}, outcome))
    return rows


def test_volumes_levels_floors_and_groups_per_version():
    rows = [
        _row(1, 2, 0.5, {"sex": "female", "age_band": "65-74", "ethnicity": None, "site": "north"}, None),
        _row(2, 4, 0.1, None, None),  # predicted before groups were kept
        _row(3, 3, 0.2, {"sex": "male", "age_band": "25-44", "ethnicity": "A", "site": None}, None, version="4"),
    ]
    rows.append(PredictionRow(4, "t", "k", "vigil-cxr", "1", {"findings": []}, None, None, None))  # a second read
    report = monitor(rows, SINCE, UNTIL, load_policy()).to_dict()
    assert report["n_predictions"] == 3 and [v["version"] for v in report["versions"]] == ["3", "4"]
    v3 = report["versions"][0]
    assert v3["levels"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}
    assert (v3["news2_floor_raised_rate"], v3["safety_floor_raised_rate"]) == (0.5, 0.5)
    assert v3["groups"]["sex"] == {"female": 1, "unknown": 1} and v3["groups"]["site"] == {"north": 1, "unknown": 1}
    assert v3["n_with_outcome"] == 0 and v3["audits"] == {}


def test_outcomes_are_judged_per_group_by_the_release_gate(caplog):
    fair = monitor(_population(), SINCE, UNTIL, load_policy(), n_boot=200).versions[0]
    assert fair.n_with_outcome == 1200 and set(fair.audits) == {"admitted", "under-triage"}
    # Outcomes drawn from the scores: the estimate from the scores alone agrees with the measurement.
    admitted = fair.estimated["admitted"]
    assert admitted["estimated"] == pytest.approx(admitted["measured"], abs=0.03) and admitted["n_measured"] == 1200
    assert set(admitted["by_group"]["sex"]) == {"female", "male"} and "CBPE" in admitted["note"]
    assert fair.estimated["critical"]["measured"] is None  # no critical outcome fed back: nothing measured
    assert fair.audits["under-triage"]["gate_status"] != "fail", fair.audits["under-triage"]["breaches"]
    report = monitor(_population(under_triaged="male"), SINCE, UNTIL, load_policy(), n_boot=200)
    unfair = report.versions[0]
    found = unfair.audits["under-triage"]
    assert any(b.startswith("vigil-triage v3 under-triage: ") for b in report.breaches)
    assert report.to_dict()["breaches"] == report.breaches
    assert any("breaches the release policy" in r.message and r.levelname == "WARNING" for r in caplog.records)
    assert found["gate_status"] == "fail"
    assert any("under_triage" in reason and "sex" in reason for reason in found["breaches"]), found["breaches"]
    sex = next(a for a in found["audit"]["attributes"] if a["attribute"] == "sex")
    rates = {g["group"]: g["metrics"]["under_triage_rate"]["estimate"] for g in sex["groups"]}
    assert rates["male"] > 0.3 and rates["female"] == pytest.approx(0.0)


@pytest.fixture
def service(tmp_path, model_folder):
    from tests.serving.conftest import make_service

    with make_service(tmp_path, model_folder) as svc:
        yield svc


def test_predictions_outcomes_and_monitor_through_the_service(service, tmp_path, monkeypatch):
    """Triage answers keep their patient's groups; outcomes fed back join them; `vigil monitor` reads the store."""
    records = [{**WELL, "age_years": 70, "sex": "female", "site": "north"}, {**WELL, "ethnicity": "B"}]
    results = [service.client.post("/v1/triage", json=r, headers=service.headers("triage")).json() for r in records]
    fed = {"audit_id": results[0]["audit_id"], "observed_utc": "2099-01-01T00:00:00Z", "triage": {"admitted": True}}
    assert service.client.post("/v1/outcomes", json=fed, headers=service.headers("outcomes")).status_code == 201
    rows = list(service.store.read_predictions("2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"))
    assert [r.groups for r in rows] == [
        {"sex": "female", "age_band": "65-74", "ethnicity": None, "site": "north"},
        {"sex": "male", "age_band": "25-44", "ethnicity": "B", "site": None},
    ]
    assert rows[0].outcome == {"admitted": True} and rows[1].outcome is None
    assert list(service.store.read_predictions("2100-01-01T00:00:00Z", "2100-01-02T00:00:00Z")) == []
    from vigil.cli import app

    monkeypatch.setenv("VIGIL_WORK_DIR", str(tmp_path))
    res = CliRunner().invoke(
        app, ["monitor", "--since", "2000-01-01T00:00:00Z", "--until", "2100-01-01T00:00:00Z", "--n-boot", "50"]
    )
    assert res.exit_code == 0, res.output
    assert "2 triage predictions" in res.output and "1 with outcomes" in res.output
    report = json.loads(next((tmp_path / "monitoring").glob("monitoring_*.json")).read_text())
    assert report["versions"][0]["groups"]["ethnicity"] == {"B": 1, "unknown": 1}
    bad = CliRunner().invoke(app, ["monitor", "--since", "yesterday", "--until", "2100-01-01T00:00:00Z"])
    assert bad.exit_code == 2 and "since" in bad.output and "Traceback" not in bad.output


def _read(seq: int, flags: dict[str, bool], truth: dict[str, int] | None) -> PredictionRow:
    findings = [
        {"finding": "effusion", "probability": 0.9 if flags["effusion"] else 0.1, "flagged": flags["effusion"]},
        {"finding": "pneumothorax", "probability": None, "flagged": False},  # not validated: never flagged
    ]
    output = {"findings": findings, "flagged": any(flags.values())}
    outcome = {"findings": truth} if truth is not None else None
    return PredictionRow(seq, "t", "k", "vigil-cxr", "2", output, None, outcome, "imaging" if truth else None)


def test_second_reads_give_flag_rates_and_sensitivity_against_radiologists_reads():
    rows = [
        _read(1, {"effusion": True}, {"effusion": 1, "pneumothorax": 1}),
        _read(2, {"effusion": False}, {"effusion": 1}),
        _read(3, {"effusion": False}, {"effusion": 0}),
        _read(4, {"effusion": True}, None),
    ]
    (reads,) = monitor(rows, SINCE, UNTIL, load_policy()).to_dict()["imaging"]
    assert (reads["n_second_reads"], reads["flagged_rate"]) == (4, 0.5)
    effusion = reads["findings"]["effusion"]
    assert (effusion["n_evaluated"], effusion["flag_rate"], effusion["n_read_by_radiologist"]) == (4, 0.5, 3)
    assert effusion["sensitivity"]["estimate"] == 0.5 and effusion["sensitivity"]["n"] == 2
    assert effusion["specificity"]["estimate"] == 1.0 and 0.0 < effusion["specificity"]["low"] < 1.0
    assert "pneumothorax" not in reads["findings"]  # never evaluated, so its truth judges nothing


def test_the_monitor_command_exits_1_on_a_breach(tmp_path, monkeypatch):
    """A nightly job can alert on the exit status: the under-triaged group's breach is exit 1, listed in the report."""
    from models.outcomes import validate_outcome
    from serving.store.database import Store
    from serving.store.records import AuditRecord
    from vigil.cli import app

    population = _population(under_triaged="male")
    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    records = [
        AuditRecord("r", "2026-12-07T10:00:00.000Z", "k", "/v1/triage", "vigil-triage", "3", "", "", r.output, 200)
        for r in population
    ]
    store.write_audits(records, [r.groups for r in population])
    outcomes = [
        validate_outcome({"audit_id": r.seq, "observed_utc": "2026-12-07T12:00:00Z", "triage": r.outcome})
        for r in population
    ]
    assert all(not isinstance(o, Exception) for o in store.record_outcomes(outcomes, "k"))
    store.dispose()
    monkeypatch.setenv("VIGIL_WORK_DIR", str(tmp_path))
    prom = tmp_path / "textfile" / "vigil.prom"
    res = CliRunner().invoke(
        app, ["monitor", "--since", SINCE, "--until", UNTIL, "--n-boot", "100", "--prometheus-textfile", str(prom)]
    )
    assert res.exit_code == 1, res.output
    assert "1200 triage predictions" in res.output and "under-triage (n=1200): fail" in res.output
    report = json.loads(next((tmp_path / "monitoring").glob("monitoring_*.json")).read_text())
    assert any(b.startswith("vigil-triage v3 under-triage: ") for b in report["breaches"])
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    version = (("model", "vigil-triage"), ("version", "3"))
    assert samples[("vigil_monitor_predictions", version)] == 1200
    assert samples[("vigil_monitor_breaches", tuple(sorted((*version, ("audit", "under-triage")))))] >= 1
    measured = tuple(sorted((*version, ("kind", "measured"), ("outcome", "admitted"))))
    assert 0.5 < samples[("vigil_monitor_auroc", measured)] <= 1.0
    assert samples[("vigil_monitor_period_end_timestamp_seconds", ())] == 1796688000.0  # 2026-12-08T00:00:00Z
