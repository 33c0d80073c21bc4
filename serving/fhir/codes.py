"""The FHIR R4 and CDS Hooks vocabulary shared by :mod:`serving.fhir.record` and :mod:`serving.fhir.response`.

Code systems, Vigil's one CDS service (:data:`SERVICE_ID` on :data:`HOOK`, with the :data:`PREFETCH` templates it
asks the client for), the Observation codes it reads, and the SNOMED CT tables of ECDS acuity, ECDS arrival mode
and AVPU findings. Constants only.
"""

from __future__ import annotations

from typing import Final

SERVICE_ID: Final = "vigil-triage"
HOOK: Final = "encounter-start"

LOINC: Final = "http://loinc.org"
SNOMED: Final = "http://snomed.info/sct"
UCUM: Final = "http://unitsofmeasure.org"

VIGIL_FHIR: Final = "https://vigil.example/fhir"
OUTCOME_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/triage-outcome"
MODEL_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/triage-model"
TOPIC_SYSTEM: Final = f"{VIGIL_FHIR}/CodeSystem/cds-topic"
REQUEST_ID_SYSTEM: Final = f"{VIGIL_FHIR}/NamingSystem/request-id"
ARRIVAL_MODE_EXTENSION: Final = f"{VIGIL_FHIR}/StructureDefinition/arrival-mode"

#: Observation codes -> what they carry. LOINC unless noted.
OBSERVATION_CODES: Final[dict[tuple[str, str], str]] = {
    (LOINC, "8867-4"): "heart_rate",
    (LOINC, "9279-1"): "resp_rate",
    (LOINC, "8480-6"): "sbp",
    (LOINC, "8462-4"): "dbp",
    (LOINC, "85354-9"): "bp_panel",
    (LOINC, "59408-5"): "spo2",
    (LOINC, "2708-6"): "spo2",
    (LOINC, "8310-5"): "temperature_c",
    (LOINC, "9269-2"): "gcs",
    (LOINC, "72514-3"): "pain_score",
    (LOINC, "3150-0"): "fio2",
    (LOINC, "3151-8"): "o2_flow",
    (LOINC, "67775-7"): "consciousness",
    (SNOMED, "1104441000000107"): "consciousness",
    (LOINC, "8661-1"): "chief_complaint",
}

#: ECDS acuity (SNOMED CT, UK edition), by level. Codes agree across several public NHS ECDS analyses.
ECDS_ACUITY_SNOMED: Final[dict[int, str]] = {
    1: "1064891000000107",
    2: "1064911000000105",
    3: "1064901000000108",
    4: "1077241000000103",
    5: "1077251000000100",
}
#: ECDS arrival mode (SNOMED CT, UK edition) -> canonical ``arrival_mode``.
ECDS_ARRIVAL_MODE: Final[dict[str, str]] = {
    "1048021000000102": "ambulance",  # non-emergency road ambulance
    "1048031000000100": "ambulance",  # emergency road ambulance
    "1048041000000109": "ambulance",  # emergency road ambulance with medical escort
    "1048051000000107": "ambulance",  # helicopter air ambulance
    "1048081000000101": "ambulance",  # medical repatriation air ambulance
    "1048061000000105": "walk_in",  # public transport
    "1048071000000103": "walk_in",  # own transport
    "1047991000000102": "other",  # prison transport
    "1048001000000106": "other",  # police transport
}
#: AVPU findings (SNOMED CT) as in the IHE mPSC value set; no code for "new confusion" could be verified.
ACVPU_SNOMED: Final[dict[str, str]] = {
    "248234008": "A",  # Mentally alert
    "255373000": "V",  # Verbal
    "450847001": "P",  # Responds to pain
    "422768004": "U",  # Unresponsive
}

PREFETCH: Final[dict[str, str]] = {
    "patient": "Patient/{{context.patientId}}",
    "encounter": "Encounter/{{context.encounterId}}",
    # `patient=` rather than `subject=`: Observation.subject may be a Patient, Group, Device or Location, so a
    # bare id in `subject=` is ambiguous and some servers refuse it; the CDS Hooks examples use `patient=`.
    "vitals": "Observation?patient={{context.patientId}}&category=vital-signs&_sort=-date&_count=100",
    # Observations outside the vital-signs category that Vigil reads (chief complaint, pain, GCS, ACVPU, oxygen).
    "observations": "Observation?patient={{context.patientId}}&code="
    + ",".join(
        f"{system}|{code}"
        for (system, code), kind in OBSERVATION_CODES.items()
        if kind in {"chief_complaint", "pain_score", "gcs", "consciousness", "fio2", "o2_flow"}
    )
    + "&_sort=-date&_count=50",
}
