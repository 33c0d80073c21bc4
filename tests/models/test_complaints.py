"""UK ED chief complaints read onto the NHAMCS RFV vocabulary: synonyms, red flags, negation, codes.

The expected readings below are written out literally (not derived from the module's tables), except the
exhaustive check that every listed phrase reads as its own group's target.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.triage.complaint_terms import CASE_SENSITIVE, SNOMED_COMPLAINTS, SYNONYM_GROUPS
from models.triage.complaints import RED_FLAGS, ComplaintReading, RedFlag, read_complaint
from models.triage.tokens import tokenize

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("VIGIL_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
NHAMCS_DIR = DATA_DIR / "triage" / "nhamcs_ed"

# (written at triage, what the model reads, red flags)
EXPECTED: list[tuple[str, str, tuple[str, ...]]] = [
    ("stroke symptoms", "Cerebrovascular disease", ("stroke",)),
    ("CVA", "Cerebrovascular disease", ("stroke",)),
    ("?stroke", "Cerebrovascular disease", ("stroke",)),
    ("TIA", "Cerebrovascular disease", ()),
    ("anaphylaxis", "Allergy with labored breathing (dyspnea)", ("anaphylaxis",)),
    ("SOB", "Shortness of breath", ()),
    ("dyspnoea", "Labored or difficult breathing (dyspnea)", ()),
    ("DIB", "Labored or difficult breathing (dyspnea)", ()),
    ("collapse", "Fainting (syncope)", ()),
    ("syncope", "Fainting (syncope)", ()),
    ("seizure", "Convulsions", ("seizure",)),
    ("fit", "Convulsions", ("seizure",)),
    ("fitting", "Unconscious on arrival; Convulsions", ("status_epilepticus",)),
    ("status epilepticus", "Unconscious on arrival; Convulsions", ("status_epilepticus",)),
    ("unresponsive", "Unconscious on arrival", ("unresponsive",)),
    ("septic", "Sepsis, septicemia", ("sepsis",)),
    ("sepsis", "Sepsis, septicemia", ("sepsis",)),
    ("suicidal", "Suicide attempt", ("suicidal",)),
    ("OD", "Overdose, intentional", ("overdose",)),
    ("overdose", "Overdose, intentional", ("overdose",)),
    ("GI bleed", "Gastrointestinal bleeding", ("gi_haemorrhage",)),
    ("PR bleed", "Gastrointestinal bleeding", ("gi_haemorrhage",)),
    ("haematemesis", "Gastrointestinal bleeding", ("gi_haemorrhage",)),
    ("fall", "Accident, NOS", ()),
    ("NOF", "Fracture/dislocation of leg; Hip pain", ()),
    ("#NOF", "Fracture/dislocation of leg; Hip pain", ()),
    ("# NOF", "Fracture/dislocation of leg; Hip pain", ()),
    ("head injury", "Injury of head", ()),
    ("HI", "Injury of head", ()),
    ("chest pain", "Chest pain", ()),
    ("CP", "Chest pain", ()),
    ("ACS", "Ischemic chest pain", ("acs",)),
    ("MI", "Ischemic chest pain", ("acs",)),
    ("abdo pain", "Abdominal pain, cramps, spasms", ()),
    ("RTC", "Motor vehicle accident", ()),
    ("DKA", "Diabetes mellitus", ()),
    ("PE", "Shortness of breath", ()),
    ("DVT", "Phlebitis, thrombophlebitis; Swelling of leg", ()),
    ("UTI", "Urinary tract infection", ()),
    ("LOC", "Fainting (syncope)", ()),
    ("altered level of consciousness", "Altered level of consciousness", ("altered_consciousness",)),
    ("confusion", "Altered level of consciousness", ("altered_consciousness",)),
    ("cardiac arrest", "Cardiac arrest", ("cardiac_arrest",)),
    ("c-spine injury", "Fracture/dislocation of spinal column", ("spinal_injury",)),
    ("cervical spine injury", "Fracture/dislocation of spinal column", ("spinal_injury",)),
    ("major trauma", "Multiple injury", ("major_trauma",)),
    ("burns", "Burn, all degrees", ()),
    ("palpitations", "Abnormal pulsations and palpitations", ()),
    ("headache", "Headache, pain in head", ()),
    ("back pain", "Back pain, ache, soreness, discomfort", ()),
    ("ankle injury", "Injury of ankle", ()),
    ("diarrhoea", "Diarrhea", ()),
    ("anaemia", "Anemia", ()),
    ("oedema", "Edema", ()),
    ("D&V", "Diarrhea; Vomiting", ()),
    # Manchester presentational flow-chart names
    ("Unwell adult", "General ill feeling", ()),
    ("Shortness of breath in adults", "Shortness of breath", ()),
    ("Collapsed adult", "Fainting (syncope)", ()),
    ("Major trauma", "Multiple injury", ("major_trauma",)),
    ("Overdose and poisoning", "Overdose, intentional", ("overdose",)),
    ("Self-harm", "Suicide attempt", ("suicidal",)),
    ("Fits", "Convulsions", ("seizure",)),
    ("GI bleeding", "Gastrointestinal bleeding", ("gi_haemorrhage",)),
    ("Apparently drunk", "Adverse effect of alcohol", ()),
]


@pytest.mark.parametrize(("written", "text", "flags"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_uk_complaints_read_as_nhamcs_wording(written: str, text: str, flags: tuple[str, ...]) -> None:
    reading = read_complaint(written)
    assert reading.text_for_model == text
    assert reading.red_flags == flags


@pytest.mark.parametrize(
    ("target", "flag", "phrase"),
    [(t, f, p) for t, f, phrases in SYNONYM_GROUPS for p in phrases],
    ids=[p for _, _, phrases in SYNONYM_GROUPS for p in phrases],
)
def test_every_listed_phrase_reads_as_its_group(target: str, flag: str | None, phrase: str) -> None:
    written = phrase.upper() if phrase in CASE_SENSITIVE else phrase
    reading = read_complaint(written)
    if flag is None:
        assert reading.text_for_model == target
        assert reading.red_flags == ()
    else:
        assert reading.red_flags == (flag,)
        assert reading.text_for_model == RED_FLAGS[flag].canonical_text
    assert len(reading.matched_terms) == 1


def test_unknown_words_stay_and_recognised_terms_are_replaced() -> None:
    reading = read_complaint("SOB and cough for 3 days, worse at night")
    assert reading.text_for_model == "Shortness of breath and Cough for 3 days; worse at night"
    assert reading.matched_terms == ("sob", "cough")


def test_a_red_flag_leaves_only_its_canonical_text() -> None:
    plain = read_complaint("cardiac arrest")
    padded = read_complaint("Cardiac arrest. Wrist pain, cough, sore throat, feeling better, mild rash")
    assert padded.text_for_model == plain.text_for_model == "Cardiac arrest"
    assert padded.red_flags == ("cardiac_arrest",)


def test_red_flags_are_ordered_most_urgent_first() -> None:
    reading = read_complaint("chest pain ?ACS, now unresponsive, ?sepsis")
    assert reading.red_flags == ("unresponsive", "sepsis", "acs")
    assert reading.text_for_model == "Unconscious on arrival; Sepsis, septicemia; Ischemic chest pain"
    assert [RED_FLAGS[f].floor_level for f in reading.red_flags] == [1, 2, 2]


@pytest.mark.parametrize(
    ("written", "text", "flags"),
    [
        ("no chest pain", "", ()),
        ("headache, denies LOC", "Headache, pain in head", ()),
        ("head injury, no LOC, vomiting", "Injury of head; Vomiting", ()),
        ("denies chest pain or SOB", "", ()),
        ("nil suicidal ideation", "", ()),
        ("not confused", "", ()),
        ("no seizure but now fitting", "Unconscious on arrival; Convulsions", ("status_epilepticus",)),
        ("no chest pain; ACS", "Ischemic chest pain", ("acs",)),
        ("no appetite", "no appetite", ()),
        ("not breathing", "Cardiac arrest", ("cardiac_arrest",)),
        # phrases that begin with a negation word are read as phrases first
        ("no response to pain", "Unconscious on arrival", ("unresponsive",)),
        ("collapsed, no pulse", "Cardiac arrest", ("cardiac_arrest",)),
        ("not alert", "Altered level of consciousness", ("altered_consciousness",)),
    ],
)
def test_negation(written: str, text: str, flags: tuple[str, ...]) -> None:
    reading = read_complaint(written)
    assert reading.text_for_model == text
    assert reading.red_flags == flags


def test_negated_terms_are_recorded_for_audit() -> None:
    assert read_complaint("headache, no LOC").matched_terms == ("headache", "negated:loc")


def test_abbreviation_that_is_a_word_counts_only_in_capitals() -> None:
    assert read_complaint("HI").red_flags == ()
    assert read_complaint("HI").text_for_model == "Injury of head"
    assert read_complaint("hi there").text_for_model == "hi there"
    assert read_complaint("fit and well, cut finger").text_for_model == "Laceration/cut finger"


@pytest.mark.parametrize(
    ("written", "text", "flags"),
    [
        ("29857009", "Chest pain", ()),
        ("SNOMED:410429000", "Cardiac arrest", ("cardiac_arrest",)),
        ("snomed ct: 39579001", "Allergy with labored breathing (dyspnea)", ("anaphylaxis",)),
        ("SCT#230690007", "Cerebrovascular disease", ("stroke",)),
        (" 267036007 ", "Labored or difficult breathing (dyspnea)", ()),
        ("123456789", "", ()),  # not in the table: nothing usable
    ],
)
def test_snomed_chief_complaint_codes(written: str, text: str, flags: tuple[str, ...]) -> None:
    reading = read_complaint(written)
    assert reading.text_for_model == text
    assert reading.red_flags == flags


def test_every_snomed_code_is_read_through_the_synonym_table() -> None:
    for code in SNOMED_COMPLAINTS:
        reading = read_complaint(code)
        assert reading.text_for_model, code
        assert reading.matched_terms[0] == f"snomed:{code}"


@pytest.mark.parametrize("empty", [None, "", "   ", "...", "12345"])
def test_nothing_usable_reads_as_empty(empty: str | None) -> None:
    reading = read_complaint(empty)
    assert reading.red_flags == ()
    assert reading.text_for_model in ("", "12345")


def test_red_flag_table_is_documented_and_levels_are_urgent() -> None:
    for flag_id, flag in RED_FLAGS.items():
        assert isinstance(flag, RedFlag)
        assert flag.id == flag_id
        assert flag.floor_level in (1, 2)
        assert flag.label and flag.source and flag.canonical_text
    assert {f for f in RED_FLAGS if RED_FLAGS[f].floor_level == 1} == {
        "cardiac_arrest",
        "unresponsive",
        "status_epilepticus",
        "anaphylaxis",
    }
    assert isinstance(read_complaint("x"), ComplaintReading)


def test_a_canonical_text_read_again_keeps_its_floor() -> None:
    """The model's reading of a red flag, read again (e.g. by the encoder), still sets that flag's floor."""
    for flag in RED_FLAGS.values():
        again = read_complaint(flag.canonical_text)
        assert again.red_flags, flag.id
        assert min(RED_FLAGS[f].floor_level for f in again.red_flags) <= flag.floor_level, flag.id
        assert again.text_for_model == flag.canonical_text, flag.id


@pytest.mark.parametrize(
    ("rfv", "flags"),
    [
        ("Cardiac arrest", ("cardiac_arrest",)),
        ("Unconscious on arrival", ("unresponsive",)),
        ("Convulsions", ("seizure",)),
        ("Cerebrovascular disease", ("stroke",)),
        ("Overdose, intentional", ("overdose",)),
        ("Suicide attempt", ("suicidal",)),
        ("Vomiting blood (hematemesis)", ("gi_haemorrhage",)),
        ("Sepsis, septicemia", ("sepsis",)),
        ("Food poisoning", ()),
        ("Injury, multiple or unspecified", ()),
        ("Chest pain", ()),
    ],
)
def test_nhamcs_rfv_labels(rfv: str, flags: tuple[str, ...]) -> None:
    """The training data's own wording: red flags where the RFV label is itself time-critical."""
    assert read_complaint(rfv).red_flags == flags


@pytest.mark.realdata
@pytest.mark.skipif(not NHAMCS_DIR.is_dir(), reason=f"NHAMCS not found at {NHAMCS_DIR} (set VIGIL_DATA_DIR)")
def test_every_target_word_is_in_the_nhamcs_vocabulary() -> None:
    from models.triage.features import FeatureEncoder
    from training.data.nhamcs import load_nhamcs

    dataset = load_nhamcs(DATA_DIR, (2018, 2019))
    vocabulary = set(FeatureEncoder.fit(dataset.frame, min_token_count=5).vocabulary)
    targets = {t for t, _, _ in SYNONYM_GROUPS if t} | {f.canonical_text for f in RED_FLAGS.values()}
    missing = {t: [w for w in tokenize(t) if w not in vocabulary] for t in targets}
    assert {t: m for t, m in missing.items() if m} == {}
    assert all(tokenize(t) for t in targets)
