"""A well adult's triage record: the valid request body the serving tests send when the record itself is not
what they test."""

from __future__ import annotations

WELL = {
    "age_years": 30,
    "sex": "male",
    "heart_rate": 72,
    "resp_rate": 14,
    "sbp": 125,
    "dbp": 80,
    "spo2": 99,
    "temperature_c": 36.8,
    "consciousness": "A",
}
