"""Reading the API key from request headers, and masking it for logs."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.api.auth import mask_key, parse_presented_key
from serving.store.records import split_key

KEY = "vgl_Kx7Qm2Lp9Rt4_" + "s3cr3t-_" * 5 + "abc"
OTHER = "vgl_Zz7Qm2Lp9Rt4_" + "0ther-_x" * 5 + "abc"


def test_key_fixture_is_well_formed() -> None:
    assert split_key(KEY) == ("Kx7Qm2Lp9Rt4", "s3cr3t-_" * 5 + "abc")
    assert split_key(OTHER) is not None


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expected"),
    [
        (f"Bearer {KEY}", None, KEY),
        (f"bearer {KEY}", None, KEY),
        (f"BEARER   {KEY}  ", None, KEY),
        (None, KEY, KEY),
        (None, f"  {KEY}\t", KEY),
        (f"Bearer {KEY}", KEY, KEY),  # both, agreeing
        (None, None, None),
        ("", "", None),  # empty headers count as absent
        ("   ", None, None),
        ("", KEY, KEY),
    ],
)
def test_parse_presented_key_finds_the_key(
    authorization: str | None, x_api_key: str | None, expected: str | None
) -> None:
    assert parse_presented_key(authorization, x_api_key) == expected


@pytest.mark.parametrize(
    ("authorization", "x_api_key"),
    [
        (f"Basic {KEY}", None),  # another scheme
        (KEY, None),  # no scheme
        ("Bearer", None),  # no credential
        (f"Bearer {KEY} extra", None),
        (f"Bearer{KEY}", None),
        (f"Bearer {KEY}\x00", None),
        ("Bearer clé", None),  # non-ASCII
        ("Bearer " + "a" * 257, None),  # over 256 characters
        (None, f"{KEY} {KEY}"),
        (None, "ke\x7fy"),
        (f"Bearer {KEY}", OTHER),  # both, disagreeing
        (f"Basic {KEY}", KEY),  # a malformed header is not skipped over
    ],
)
def test_parse_presented_key_refuses_malformed_headers(authorization: str | None, x_api_key: str | None) -> None:
    assert parse_presented_key(authorization, x_api_key) is None


def test_parse_does_not_check_the_key_format() -> None:
    assert parse_presented_key("Bearer some-other-token", None) == "some-other-token"


def test_mask_key_keeps_only_the_key_id() -> None:
    assert mask_key(KEY) == "vgl_Kx7Qm2Lp9Rt4_…"


@pytest.mark.parametrize("bad", ["", "vgl_", KEY[:-1], KEY + "x", "Bearer " + KEY, "s3cr3t-_s3cr3t", "vgl_short_x"])
def test_mask_key_reveals_nothing_of_a_malformed_key(bad: str) -> None:
    assert mask_key(bad) == "<not a Vigil key>"


@given(
    key_id=st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=12),
    secret_bytes=st.binary(min_size=32, max_size=32),
)
def test_mask_key_is_the_key_id_alone(key_id: str, secret_bytes: bytes) -> None:
    secret = base64.urlsafe_b64encode(secret_bytes).decode().rstrip("=")  # what secrets.token_urlsafe(32) makes
    key = f"vgl_{key_id}_{secret}"
    assert split_key(key) == (key_id, secret)
    assert mask_key(key) == f"vgl_{key_id}_…"
