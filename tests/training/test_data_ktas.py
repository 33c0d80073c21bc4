"""KTAS adapter: mapping on a small hand-made cp1254 file, and counts on the real file (Moon et al. 2019)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.errors import DataSourceError
from models.triage.record import RECORD_FIELDS
from models.triage.record_frame import validate_frame
from training.data import DATASET_COLUMNS, default_data_dir, load_dataset, load_ktas
from training.data.ktas import KTAS_PATH, POST_TRIAGE_COLUMNS

DATA_DIR = default_data_dir()
needs_ktas = pytest.mark.skipif(
    not (DATA_DIR / KTAS_PATH).is_file(), reason=f"KTAS file not found under {DATA_DIR} (set VIGIL_DATA_DIR)"
)

HEADER = (
    "Group;Sex;Age;Patients number per hour;Arrival mode;Injury;Chief_complain;Mental;Pain;NRS_pain;SBP;DBP;HR;"
    "RR;BT;Saturation;KTAS_RN;Diagnosis in ED;Disposition;KTAS_expert;Error_group;Length of stay_min;"
    "KTAS duration_min;mistriage"
)
FAKE_LINES = [
    # Pain 0 with #BOŞ! NRS -> 0; private vehicle -> walk_in; ICU -> admitted and critical; Group 1: no SpO2.
    "1;2;77;4;3;1;pain, back;1;0;#BOŞ!;138;80;87;18;36.8;;4;Secret diagnosis;3;3;2;599;4,87;2",
    # Pain 1 with #BOŞ! NRS -> missing; '??' vitals -> missing; lost Korean complaint; death -> critical only.
    "2;1;70;8;6;1;??? ??;3;1;#BOŞ!;??;??;96;22;36.3;78;2;Dyspnoea;6;1;1;593;2,00;2",
    # Spaces around values, public ambulance, SpO2 20 (implausible: coerced), surgery -> admitted.
    "2 ; 1 ; 40 ;8; 2 ;2; Open Wound ;4;1; 7 ;120;70;100;20;37.0; 20 ;5;Laceration;7;2;0 ;100;1,00;0 ",
]


def _write_fake(folder: Path, lines: list[str] = FAKE_LINES, header: str = HEADER) -> Path:
    path = folder / KTAS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\r\n".join([header, *lines]) + "\r\n").encode("cp1254"))
    return path


@pytest.fixture
def fake(tmp_path: Path):
    _write_fake(tmp_path)
    return load_ktas(tmp_path)


def test_fake_mapping(fake) -> None:
    frame = fake.frame
    assert list(frame.columns) == list(DATASET_COLUMNS)
    back, dyspnoea, wound = (frame.iloc[i] for i in range(3))
    assert (back["sex"], back["age_years"], back["arrival_mode"], back["consciousness"]) == ("male", 77, "walk_in", "A")
    assert back["pain_score"] == 0  # Pain == 0: no pain
    assert np.isnan(back["spo2"]) and back["site"] == "ktas_group1"
    assert (back["acuity"], back["nurse_acuity"], back["admitted"], back["critical"]) == (3, 4, 1, 1)
    assert (dyspnoea["arrival_mode"], dyspnoea["consciousness"], dyspnoea["sex"]) == ("other", "P", "female")
    assert np.isnan(dyspnoea["pain_score"])  # Pain == 1 without a score
    assert np.isnan(dyspnoea["sbp"]) and np.isnan(dyspnoea["dbp"]) and dyspnoea["spo2"] == 78
    assert dyspnoea["chief_complaint"] is None  # '??? ??' is lost Korean text
    assert (dyspnoea["admitted"], dyspnoea["critical"]) == (0, 1)
    assert (wound["arrival_mode"], wound["consciousness"], wound["pain_score"]) == ("ambulance", "U", 7)
    assert wound["chief_complaint"] == "Open Wound"
    assert np.isnan(wound["spo2"]) and fake.coerced["spo2"] == 1
    assert (wound["admitted"], wound["critical"], wound["temperature_c"]) == (1, 0, 37.0)
    assert fake.coerced["chief_complaint_lost_text"] == 1
    assert frame["visit_id"].tolist() == ["ktas-0", "ktas-1", "ktas-2"]
    assert frame["ethnicity"].isna().all() and frame["payer"].isna().all() and frame["year"].isna().all()


def test_fake_post_triage_text_is_not_carried(fake) -> None:
    as_text = fake.frame.astype(str).to_numpy().ravel().tolist()
    assert not any("Secret diagnosis" in cell or "Laceration" in cell for cell in as_text)


def test_missing_file_names_path_and_env(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match=r"data\.csv.*VIGIL_DATA_DIR"):
        load_ktas(tmp_path)


def test_changed_header_is_refused(tmp_path: Path) -> None:
    _write_fake(tmp_path, header=HEADER.replace("KTAS_expert", "KTAS_gold"))
    with pytest.raises(DataSourceError, match="KTAS_expert"):
        load_ktas(tmp_path)


# --- real file -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ktas():
    return load_dataset("ktas", DATA_DIR)


@pytest.mark.realdata
@needs_ktas
def test_counts_match_provenance(ktas) -> None:
    frame = ktas.frame
    assert len(frame) == 1_267
    assert frame["acuity"].value_counts().sort_index().to_dict() == {1: 26, 2: 220, 3: 487, 4: 459, 5: 75}
    assert frame["nurse_acuity"].value_counts().sort_index().to_dict() == {1: 18, 2: 214, 3: 447, 4: 501, 5: 87}
    assert frame["admitted"].sum() == 373 + 8 + 22  # ward, ICU, surgery
    assert frame["critical"].sum() == 8 + 9  # ICU, death
    assert frame["site"].value_counts().to_dict() == {"ktas_group1": 688, "ktas_group2": 579}
    assert frame["sex"].value_counts().to_dict() == {"male": 661, "female": 606}
    assert frame["arrival_mode"].value_counts().to_dict() == {"walk_in": 79 + 753, "ambulance": 266 + 155, "other": 14}
    assert frame["consciousness"].value_counts().to_dict() == {"A": 1_187, "V": 39, "P": 28, "U": 13}
    assert (frame["pain_score"] == 0).sum() == 553 and frame["pain_score"].isna().sum() == 3
    assert frame.loc[frame["site"] == "ktas_group1", "spo2"].isna().all()
    assert frame["chief_complaint"].isna().sum() == 21  # the '?'-only complaints
    assert frame["sbp"].isna().sum() == 25 and frame["heart_rate"].isna().sum() == 20


@pytest.mark.realdata
@needs_ktas
def test_specific_rows(ktas) -> None:
    frame = ktas.frame
    first = frame.iloc[0]  # 2;2;71;3;3;2;right ocular pain;1;1;2;160;100;84;18;36.6;100;2;...;1;4
    assert (first["sex"], first["age_years"], first["arrival_mode"], first["site"]) == (
        "male",
        71,
        "walk_in",
        "ktas_group2",
    )
    assert (first["sbp"], first["dbp"], first["heart_rate"], first["resp_rate"]) == (160, 100, 84, 18)
    assert (first["temperature_c"], first["spo2"], first["pain_score"]) == (36.6, 100, 2)
    assert first["chief_complaint"] == "right ocular pain"
    assert (first["acuity"], first["nurse_acuity"], first["admitted"], first["critical"]) == (4, 2, 0, 0)
    icu = frame.iloc[91]  # Disposition 3, expert level 3, nurse level 4
    assert (icu["admitted"], icu["critical"], icu["acuity"], icu["nurse_acuity"]) == (1, 1, 3, 4)
    assert icu["pain_score"] == 5 and icu["chief_complaint"] == "pain, back"
    died = frame.iloc[61]  # Disposition 6, '??' blood pressure, SpO2 78, responds to voice
    assert (died["admitted"], died["critical"], died["consciousness"], died["spo2"]) == (0, 1, "V", 78)
    assert np.isnan(died["sbp"]) and np.isnan(died["dbp"])
    unresponsive = frame.iloc[155]  # Mental 4, Pain 0, vitals all '??'
    assert (unresponsive["consciousness"], unresponsive["pain_score"]) == ("U", 0)
    assert unresponsive[["sbp", "dbp", "heart_rate", "resp_rate", "temperature_c"]].isna().all()


@pytest.mark.realdata
@needs_ktas
def test_no_post_triage_column_reaches_the_frame(ktas) -> None:
    frame = ktas.frame
    assert list(frame.columns) == list(DATASET_COLUMNS)
    assert not set(POST_TRIAGE_COLUMNS) & set(frame.columns)
    raw = pd.read_csv(DATA_DIR / KTAS_PATH, sep=";", encoding="cp1254", dtype=str, keep_default_na=False)
    diagnoses = {d.strip() for d in raw["Diagnosis in ED"] if len(d.strip()) > 12}
    carried = set(frame[list(RECORD_FIELDS)].astype(str).to_numpy().ravel())
    assert not diagnoses & carried, "a diagnosis text reached a record field"
    # The nurse level is kept apart from the record, whose fields are the model's only inputs.
    assert "nurse_acuity" not in RECORD_FIELDS
    validate_frame(frame[list(RECORD_FIELDS)], mode="strict")
