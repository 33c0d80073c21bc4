"""The malformed-DICOM corpus (tests/dicom_corpus.py) over HTTP: the second-read route and STOW-RS into the node.

POST /v1/imaging/second-read: every refused item is 422 problem+json naming the attribute of the pixel path's error,
every item valid by design is 200, never 5xx, within a time bound, and neither the answer nor any log line carries a
header value of the source. POST /dicomweb/studies: never 5xx; an instance is either failed with a FailureReason or
stored, and a stored one is then analysed by the node's workers (valid by design) or recorded ``not_analysed`` with
the same attribute and message as the pixel path gives.

One service per module (built by :func:`tests.serving.conftest.make_service`, the builder of the ``service``
fixture) serves every item: a service per item would cost about a second each.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

import pytest

from tests.dicom_corpus import MUTATIONS, NAMES, SEED, Corpus, CorpusItem
from tests.serving.conftest import Service, make_service

TIME_LIMIT_S = 10.0  # per request or analysis of a synthetic item (milliseconds, the deflate bomb ~1 s)
FIXTURE_TIME_LIMIT_S = 60.0  # a real fixture: 966.dcm (2128 x 2000 J2K, three decoders fail) takes ~5 s
_BOUNDARY = "vigil-corpus-boundary"
ACCEPTED = [n for n in NAMES if MUTATIONS[n].error is None]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(SEED)


@pytest.fixture(scope="module")
def corpus_service(tmp_path_factory: pytest.TempPathFactory, model_folder) -> Iterator[Service]:
    with make_service(tmp_path_factory.mktemp("corpus-service"), model_folder) as svc:
        yield svc


@pytest.fixture(scope="module")
def node_service(tmp_path_factory: pytest.TempPathFactory, model_folder) -> Iterator[Service]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIGIL_DICOM_POLL_S", "0.05")
        mp.setenv("VIGIL_DICOM_PORT", "0")
        with make_service(tmp_path_factory.mktemp("corpus-node"), model_folder, dicom_node=True) as svc:
            yield svc


def _item(corpus: Corpus, name: str) -> CorpusItem:
    if MUTATIONS[name].needs_fixtures and not corpus.has_fixtures:
        pytest.skip(f"DICOM fixtures not found at {corpus.fixtures} (set VIGIL_DATA_DIR)")
    return corpus.item(name)


def _limit(name: str) -> float:
    return FIXTURE_TIME_LIMIT_S if MUTATIONS[name].needs_fixtures else TIME_LIMIT_S


def _no_secrets(item: CorpusItem, *answers: str, logs: str = "") -> None:
    """No header value of the source in an answer; none in ``logs`` either, except UIDs: the node logs, and the
    STOW-RS response returns, the SOP Instance UID by design, and a fixture's instance UID may begin with its study
    UID."""
    leaked = [secret for secret in item.secrets if secret in "\n".join(answers)]
    leaked += [secret for secret in item.secrets if secret in logs and not re.fullmatch(r"[0-9.]+", secret)]
    assert not leaked, f"header values echoed in an answer or a log line: {leaked}"


def _expect_refusal(item: CorpusItem, field: str | None, message: str) -> None:
    if not item.data:  # the route refuses an empty body itself
        assert field == "body" and "empty" in message, message
        return
    if item.field is not None:
        assert field == item.field, message
    assert field and field in message, "the message does not name the attribute at fault"
    assert re.search(item.message, message), message


# ---------------------------------------------------------------------------------------------- second read
@pytest.mark.parametrize("name", NAMES)
def test_second_read_answers_422_naming_the_attribute(
    name: str, corpus: Corpus, corpus_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    item = _item(corpus, name)
    svc = corpus_service
    with caplog.at_level(logging.DEBUG):
        start = time.perf_counter()
        res = svc.client.post(
            "/v1/imaging/second-read",
            content=item.data,
            headers=svc.headers("imaging", **{"Content-Type": "application/dicom"}),
        )
        seconds = time.perf_counter() - start
    assert res.status_code < 500, res.text
    assert seconds < _limit(name)
    _no_secrets(item, res.text, logs=caplog.text)
    if item.accepted:
        assert res.status_code == 200, res.text
        assert res.json()["source"]["rows"] > 0 and len(res.json()["findings"]) >= 2
        return
    assert res.status_code == 422, res.text
    assert res.headers["content-type"].startswith("application/problem+json")
    body = res.json()
    (error,) = body["errors"]
    assert body["detail"] == error["message"]
    _expect_refusal(item, error["field"], error["message"])


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_structured_report_of_every_item_valid_by_design(name: str, corpus: Corpus, corpus_service: Service) -> None:
    item = _item(corpus, name)
    svc = corpus_service
    res = svc.client.post(
        "/v1/imaging/second-read",
        content=item.data,
        headers=svc.headers("imaging", **{"Content-Type": "application/dicom", "Accept": "application/dicom"}),
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "application/dicom" and res.content[128:132] == b"DICM"


# ---------------------------------------------------------------------------------------------- STOW-RS
def _multipart(part: bytes) -> tuple[bytes, str]:
    body = (
        f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{_BOUNDARY}--\r\n".encode()
    )
    return body, f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'


@pytest.mark.parametrize("name", list(NAMES))
def test_stow_rs_stores_or_fails_each_instance_and_the_node_refuses_it(
    name: str, corpus: Corpus, node_service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    item = _item(corpus, name)
    svc = node_service
    body, content_type = _multipart(item.data)
    with caplog.at_level(logging.DEBUG):
        res = svc.client.post(
            "/dicomweb/studies", content=body, headers=svc.headers("imaging", **{"Content-Type": content_type})
        )
        assert res.status_code in (200, 409), res.text  # one instance: stored, or failed (never 5xx)
        answer = res.json()
        if res.status_code == 409:
            (failed,) = answer["00081198"]["Value"]
            reason = failed["00081197"]["Value"]
            assert reason and reason[0] in (0xC000, 0xA700), reason
            assert not item.accepted, "a valid instance was refused at STOW-RS"
            _no_secrets(item, logs=res.text + caplog.text)
            return
        (stored,) = answer["00081199"]["Value"]
        uid = stored["00081155"]["Value"][0]
        node = svc.client.app.state.vigil.dicom_node
        deadline = time.monotonic() + _limit(name)
        queued = node.queue.get(uid)
        # until analysed or refused, or back in the queue after a failed attempt (a retry would only repeat it)
        while (
            queued.state == "analysing" or (queued.state == "received" and queued.attempts == 0)
        ) and time.monotonic() < deadline:
            time.sleep(0.02)
            queued = node.queue.get(uid)
    _no_secrets(item, queued.reason or "", queued.last_error or "", logs=res.text + caplog.text)
    if item.accepted:
        assert queued.state == "analysed", (queued.state, queued.reason_field, queued.reason)
        return
    assert queued.state == "not_analysed", (queued.state, queued.last_error)
    assert queued.reason is not None
    _expect_refusal(item, queued.reason_field, queued.reason)
