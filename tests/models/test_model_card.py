"""The model card's decision-support statement: one per task, the triage one unchanged, the imaging one about
imaging; a card takes its task's statement, and an imaging card written with the old (triage) default reads back
with the imaging one."""

from __future__ import annotations

import json

import pytest

from models.model_card import ModelCard, decision_support_statement

#: The triage statement as every triage output has carried it: written out, so a change to it fails here.
TRIAGE_TEXT = (
    "Vigil is clinical decision support. It does not replace the judgement of a clinician, who remains "
    "responsible for every triage and treatment decision. The recommended acuity is never less urgent than "
    "NEWS2 demands (Vigil's safety floor)."
)


def _card(**overrides: object) -> ModelCard:
    values: dict[str, object] = {
        "name": "m",
        "version": "1",
        "task": "free text",
        "created_utc": "20260101T000000Z",
        "intended_use": "tests",
        "out_of_scope": [],
        **overrides,
    }
    return ModelCard(**values)  # type: ignore[arg-type]


def _imaging_card(**overrides: object) -> ModelCard:
    return _card(features={"findings": ["effusion"], "pixel_path_version": "x"}, **overrides)


def test_the_triage_statement_is_unchanged() -> None:
    assert decision_support_statement("triage") == TRIAGE_TEXT
    assert _card().decision_support_statement == TRIAGE_TEXT
    assert json.loads(_card().to_json())["decision_support_statement"] == TRIAGE_TEXT


def test_the_imaging_statement_is_about_imaging() -> None:
    text = decision_support_statement("imaging")
    assert "NEWS2" not in text and "triage" not in text and "acuity" not in text
    for words in (
        "second reader",
        "radiologist or clinician reads every image",
        "does not rule findings out",
        "does not report",
        "released for the patient's population",
    ):
        assert words in text, words


@pytest.mark.parametrize("task", ["triage", "imaging"])
def test_every_statement_says_it_does_not_replace_a_clinician(task: str) -> None:
    assert "does not replace the judgement of a clinician" in decision_support_statement(task)  # type: ignore[arg-type]


def test_an_unknown_task_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="task must be one of triage, imaging; got 'ecg'"):
        decision_support_statement("ecg")  # type: ignore[arg-type]


def test_an_imaging_card_carries_the_imaging_statement() -> None:
    card = _imaging_card()
    assert card.kind == "imaging" and card.decision_support_statement == decision_support_statement("imaging")
    assert f"> {decision_support_statement('imaging')}" in card.to_markdown()
    assert ModelCard.from_json(card.to_json()) == card


def test_an_imaging_card_written_with_the_old_default_reads_back_with_the_imaging_statement() -> None:
    old = json.loads(_imaging_card().to_json())
    old["decision_support_statement"] = TRIAGE_TEXT  # what every imaging card carried before
    assert ModelCard.from_json(json.dumps(old)).decision_support_statement == decision_support_statement("imaging")


def test_a_statement_chosen_for_a_card_is_kept() -> None:
    assert _imaging_card(decision_support_statement="Site wording.").decision_support_statement == "Site wording."
    assert _card(decision_support_statement="Site wording.").decision_support_statement == "Site wording."
