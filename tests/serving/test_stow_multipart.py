"""Issue 14 findings 5 and 6 (HTTP half): STOW-RS bodies are parsed as they arrive, with every limit checked the
moment it is crossed.

A body of millions of tiny parts used to be split whole (3.6 s of event loop, +470-690 MB) before the 1,000-part
cap was checked; delimiters were found anywhere, not at line starts; an instance had no size limit of its own and
any number of uploads ran at once. Parser properties run on :class:`serving.api.multipart_stream.MultipartReader`;
the route's behaviour through the app, part of it with an ASGI ``receive`` that counts what the route read.
"""

from __future__ import annotations

import itertools
import json
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from models.errors import InputValidationError
from serving.api.errors import ApiError
from serving.api.multipart_stream import FEED_BYTES, MultipartReader, stow_boundary
from tests.serving.asgi import post_scope

BOUNDARY = "vigil-test-boundary"
CTYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def _body(
    parts: list[bytes],
    boundary: str = BOUNDARY,
    *,
    headers: bytes = b"Content-Type: application/dicom\r\n",
    close: bool = True,
) -> bytes:
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n" + p + b"\r\n" for p in parts)
    return out + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def _parse(body: bytes, cuts: list[int] | None = None, boundary: str = BOUNDARY, **limits: int) -> list[bytes]:
    with MultipartReader(
        boundary.encode(),
        max_parts=limits.get("max_parts", 1000),
        max_part_bytes=limits.get("max_part_bytes", 10**9),
        memory_bytes=limits.get("memory_bytes", 1024),
    ) as reader:
        edges = [0, *sorted(cuts or []), len(body)]
        for start, end in itertools.pairwise(edges):
            reader.feed(body[start:end])
        return [reader.read(p) for p in reader.finish()]


# ------------------------------------------------------------------------------ the parser
_BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(
        st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"--", b"\r\n--", b"\r\n\r\n"]), min_size=1, max_size=6
    ),
    boundary=st.text(_BCHARS, min_size=8, max_size=70),
    data=st.data(),
)
def test_parts_are_the_same_however_the_body_is_cut(parts, boundary, data):
    assume(all(b"\r\n--" + boundary.encode() not in b"\r\n" + p + b"\r\n" for p in parts))
    body = _body(parts, boundary)
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert _parse(body, cuts, boundary) == parts


def test_a_boundary_not_at_a_line_start_is_part_of_the_content():
    inner = [b"xx--" + BOUNDARY.encode() + b"\r\nnot a new part", b"--" + BOUNDARY.encode() + b"-- inside\r\n"]
    assert _parse(_body(inner)) == inner


def test_a_preamble_and_an_epilogue_are_ignored_and_the_first_boundary_may_open_the_body():
    body = b"a preamble\r\n" + _body([b"one"]) + b"an epilogue --" + BOUNDARY.encode() + b"\r\n"
    assert _parse(body) == [b"one"]
    assert _parse(_body([b"one"], headers=b"")) == [b"one"]  # a part without headers is application/dicom


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_body([b"one"], close=False), "no closing boundary"),
        (b"--" + BOUNDARY.encode() + b"--\r\n", "no parts"),
        (b"x" * 70_000, "no multipart boundary in the first"),
        (b"--" + BOUNDARY.encode() + b"junk\r\n\r\nA\r\n--" + BOUNDARY.encode() + b"--", "must end with CRLF"),
        (b"--" + BOUNDARY.encode() + b"\r\nno colon\r\n\r\nA\r\n--" + BOUNDARY.encode() + b"--", "malformed header"),
        (b"--" + BOUNDARY.encode() + b"\r\nX-Long: " + b"a" * 9000, "headers of part 1 exceed"),
    ],
)
def test_malformed_bodies_are_refused_naming_the_body(body, message):
    with pytest.raises(InputValidationError, match=message) as caught:
        _parse(body)
    assert caught.value.field == "body"


def test_a_part_of_another_media_type_is_415_naming_it():
    body = _body([b"one"], close=False) + b"--" + BOUNDARY.encode() + b"\r\nContent-Type: text/plain\r\n\r\nx"
    with pytest.raises(ApiError, match="part 2 is not application/dicom") as caught:
        _parse(body)
    assert caught.value.status == 415


def test_the_part_cap_stops_the_reading_as_soon_as_it_is_crossed():
    """Six million parts in 60 MB used to be built before the 1,000-part cap was checked."""
    part = b"--" + BOUNDARY.encode() + b"\r\n\r\n\r\n"  # the smallest part: no headers, empty body
    fed = 0
    with (
        MultipartReader(BOUNDARY.encode(), max_parts=1000, max_part_bytes=10**9) as reader,
        pytest.raises(InputValidationError, match="at most 1000 instances per request"),
    ):
        for _ in range(200_000):
            reader.feed(part)
            fed += 1
    assert fed == 1000 and len(reader.parts) == 1000


def test_a_part_over_the_instance_limit_is_413_naming_it_before_the_rest_is_read():
    body = _body([b"a" * 100, b"b" * 5000, b"c" * 10])
    fed = 0
    with (
        MultipartReader(BOUNDARY.encode(), max_parts=1000, max_part_bytes=4096) as reader,
        pytest.raises(ApiError, match=r"instance 2 \(multipart part 2\) is larger than the 4096-byte") as caught,
    ):
        for start in range(0, len(body), 512):
            reader.feed(body[start : start + 512])
            fed = start + 512
    assert caught.value.status == 413 and fed < len(body) - 512
    assert _parse(_body([b"x" * 4096]), max_part_bytes=4096) == [b"x" * 4096]  # exactly the limit is admitted


def test_a_large_body_is_spooled_not_held_in_memory():
    data = bytes(range(256)) * (64 * 1024)  # 16 MiB, one part
    body = _body([data, b"small"])
    with MultipartReader(BOUNDARY.encode(), max_parts=10, max_part_bytes=10**9, memory_bytes=1024 * 1024) as reader:
        tracemalloc.start()
        try:
            for start in range(0, len(body), FEED_BYTES):
                reader.feed(body[start : start + FEED_BYTES])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        parts = reader.finish()
        assert peak < 2 * 1024 * 1024, peak
        assert [reader.read(p) for p in parts] == [data, b"small"]


@pytest.mark.parametrize(
    ("ctype", "field_or_status"),
    [
        ('multipart/related; type="application/dicom"; boundary=ab', "Content-Type"),  # the two-byte boundary
        ('multipart/related; type="application/dicom"; boundary=' + "a" * 71, "Content-Type"),
        ('multipart/related; type="application/dicom"; boundary="abcdefgh "', "Content-Type"),  # trailing space
        ('multipart/related; type="application/dicom"', "Content-Type"),
        ('multipart/related; type="application/dicom"; boundary=abcdefgh; boundary=ijklmnop', "Content-Type"),
        ('multipart/related; type="application/dicom"; boundary=abc"defgh', "Content-Type"),
        ("multipart/related; boundary=abcdefgh", 415),
        ('multipart/mixed; type="application/dicom"; boundary=abcdefgh', 415),
    ],
)
def test_the_content_type_and_its_boundary_are_checked(ctype, field_or_status):
    if isinstance(field_or_status, int):
        with pytest.raises(ApiError) as caught:
            stow_boundary(ctype)
        assert caught.value.status == field_or_status
    else:
        with pytest.raises(InputValidationError) as invalid:
            stow_boundary(ctype)
        assert invalid.value.field == field_or_status


def test_quoted_boundaries_and_parameters_in_any_order_are_read():
    assert stow_boundary('Multipart/Related; boundary="a b:c,d=e"; type="Application/DICOM"') == b"a b:c,d=e"
    assert stow_boundary(f"multipart/related;type=application/dicom;boundary={BOUNDARY}") == BOUNDARY.encode()


# ------------------------------------------------------------------------------ through the app
async def _apost(
    svc: Any,
    chunks: Iterator[bytes],
    *,
    ctype: str = CTYPE,
    key: str = "imaging",
    path: str = "/dicomweb/studies",
    started: threading.Event | None = None,
    release: threading.Event | None = None,
) -> dict[str, Any]:
    """POST a body given in ``chunks`` straight to the app (in the test client's event loop); the answer and how
    many body bytes the app read. With ``release``, the body stalls after its first piece until it is set."""
    seen: dict[str, Any] = {"read": 0, "messages": []}
    pieces = iter(chunks)

    async def receive() -> dict[str, Any]:
        if started is not None:
            started.set()
        if release is not None and seen["read"]:
            while not release.is_set():
                await anyio.sleep(0.01)
        chunk = next(pieces, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        seen["read"] += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        seen["messages"].append(message)

    scope = post_scope(path, ctype, svc.keys[key])
    await svc.client.app(scope, receive, send)
    start = next(m for m in seen["messages"] if m["type"] == "http.response.start")
    seen["status"] = start["status"]
    seen["headers"] = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    seen["body"] = b"".join(m.get("body", b"") for m in seen["messages"] if m["type"] == "http.response.body")
    return seen


def _post(svc: Any, chunks: Iterator[bytes], **kwargs: Any) -> dict[str, Any]:
    return svc.client.portal.call(lambda: _apost(svc, chunks, **kwargs))


def _chunks(body: bytes, size: int = FEED_BYTES) -> Iterator[bytes]:
    return (body[i : i + size] for i in range(0, len(body), size))


def test_stow_stops_reading_a_body_of_millions_of_parts_at_the_cap(service):
    part = b"--" + BOUNDARY.encode() + b"\r\n\r\n\r\n"
    body = part * 200_000 + b"--" + BOUNDARY.encode() + b"--\r\n"  # 5.4 MB, 200,000 parts
    answer = _post(service, _chunks(body))
    assert answer["status"] == 422 and b"at most 1000 instances" in answer["body"]
    assert answer["headers"]["connection"] == "close"
    assert answer["read"] <= 1001 * len(part) + FEED_BYTES  # the rest of the body was never read


def test_stow_refuses_a_short_boundary_before_reading_the_body(service):
    part = b"--ab\r\n\r\n\r\n"
    answer = _post(
        service, _chunks(part * 1000 + b"--ab--\r\n"), ctype='multipart/related; type="application/dicom"; boundary=ab'
    )
    assert answer["status"] == 422 and answer["read"] == 0
    assert json.loads(answer["body"])["errors"][0]["field"] == "Content-Type"


def test_stow_delimiters_are_anchored_to_line_starts(service):
    """Each non-DICOM part is one failed instance: a boundary inside a part does not make more parts."""
    inner = [b"x" * 200 + b"--" + BOUNDARY.encode() + b"\r\nmore", b"y" * 200]
    body = _body(inner)
    res = service.client.post(
        "/dicomweb/studies", content=body, headers=service.headers("imaging", **{"Content-Type": CTYPE})
    )
    assert res.status_code == 409
    assert len(res.json()["00081198"]["Value"]) == 2


def test_stow_answers_413_naming_the_instance_over_the_limit(service_factory, tmp_path, model_folder):
    with service_factory(tmp_path, model_folder, max_instance_bytes=4096) as svc:
        body = _body([b"a" * 200, b"b" * 200_000, b"c" * 200])
        answer = _post(svc, _chunks(body, 8192))
        assert answer["status"] == 413 and answer["headers"]["connection"] == "close"
        assert b"instance 2 (multipart part 2) is larger than the 4096-byte limit" in answer["body"]
        assert answer["read"] < 4096 + 2 * 8192 + 300


def test_stow_feeds_the_parser_in_slices_and_lets_other_tasks_run_between_them(service, monkeypatch):
    """A body delivered as one 4 MiB message (as a test client or a fast proxy may) is parsed slice by slice, with
    the event loop free between slices (/healthz stays responsive)."""
    events: list[Any] = []
    feed = MultipartReader.feed

    def recording_feed(self: MultipartReader, data: bytes) -> None:
        events.append(len(data))
        feed(self, data)

    monkeypatch.setattr(MultipartReader, "feed", recording_feed)
    body = _body([b"z" * (4 * 1024 * 1024)])

    async def upload_beside_a_ticker() -> dict[str, Any]:
        done = anyio.Event()

        async def ticker() -> None:
            while not done.is_set():
                events.append("tick")
                await anyio.sleep(0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            answer = await _apost(service, iter([body]))
            done.set()
        return answer

    answer = service.client.portal.call(upload_beside_a_ticker)
    assert answer["status"] == 409  # not DICOM: read whole, then refused as an instance
    feeds = [i for i, e in enumerate(events) if e != "tick"]
    assert len(feeds) >= len(body) // FEED_BYTES and max(events[i] for i in feeds) <= FEED_BYTES
    between = events[feeds[0] : feeds[-1]]
    assert between.count("tick") >= len(feeds) - 1  # the ticker ran between every two slices


def test_concurrent_stow_uploads_over_the_cap_get_503_with_retry_after(service_factory, tmp_path, model_folder):
    with service_factory(tmp_path, model_folder, max_concurrent_stow=1) as svc:
        started, release = threading.Event(), threading.Event()
        first = svc.client.portal.start_task_soon(
            lambda: _apost(svc, _chunks(_body([b"one"]), 16), started=started, release=release)
        )
        assert started.wait(30)
        try:
            busy = svc.client.post(
                "/dicomweb/studies", content=_body([b"two"]), headers=svc.headers("imaging", **{"Content-Type": CTYPE})
            )
            assert busy.status_code == 503 and busy.headers["retry-after"].isdigit()
            assert "already in progress" in busy.json()["detail"]
        finally:
            release.set()
        assert first.result(30)["status"] == 409
        after = svc.client.post(
            "/dicomweb/studies", content=_body([b"three"]), headers=svc.headers("imaging", **{"Content-Type": CTYPE})
        )
        assert after.status_code == 409  # the slot was given back


def test_second_reads_over_the_cap_get_503_before_their_body_is_read(service_factory, tmp_path, model_folder):
    """POST /v1/imaging/second-read holds its body in memory until the model reads it: at most
    VIGIL_MAX_CONCURRENT_SECOND_READS at once; another is refused before its body is read (issue 14)."""
    dicom = {"ctype": "application/dicom", "path": "/v1/imaging/second-read"}
    with service_factory(tmp_path, model_folder, max_concurrent_second_reads=1) as svc:
        started, release = threading.Event(), threading.Event()
        first = svc.client.portal.start_task_soon(
            lambda: _apost(svc, iter([b"not", b" a dicom file"]), started=started, release=release, **dicom)
        )
        assert started.wait(30)
        try:
            busy = _post(svc, iter([b"x" * 1000]), **dicom)
            assert busy["status"] == 503 and busy["headers"]["retry-after"].isdigit()
            assert busy["read"] == 0  # refused before a byte of its body was taken
            assert "already in progress" in json.loads(busy["body"])["detail"]
        finally:
            release.set()
        assert first.result(30)["status"] == 422  # the held request went on, and its slot was given back
        assert _post(svc, iter([b"also not dicom"]), **dicom)["status"] == 422
