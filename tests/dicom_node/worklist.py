"""The RIS side of worklist notifications, built from libraries Vigil does not write its messages with:

- :class:`MllpReceiver`: python-hl7's asyncio MLLP server (``hl7.mllp.start_hl7_server``) on 127.0.0.1 in a thread;
  each message is parsed by python-hl7 and validated by hl7apy at its STRICT level against HL7 v2.5.1, then
  acknowledged with python-hl7's ``create_ack`` (``AA``, or the code the test sets);
- :class:`FhirReceiver`: an HTTP FHIR endpoint stand-in taking ``POST /Task``; each Task is validated by
  fhir.resources (R4B models, see tests/serving/test_fhir_validation.py) and kept; a conditional create whose
  identifier it already holds answers 200 without keeping a second one, as a FHIR server does.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from models.labels import IMAGING_FINDING_CODES
from serving.dicom_node.notify import FlaggedFinding, Notice
from serving.dicom_node.notify_hl7 import oru_r01
from tests.net import http_server

#: A header as real archives hold them: HL7 delimiters in the ID, the issuer and the name, a CR in the name.
NOTICE = Notice(
    sop_instance_uid="1.2.826.0.1.3680043.8.498.11",
    study_instance_uid="1.2.826.0.1.3680043.8.498.10",
    sr_sop_instance_uid="1.2.826.0.1.3680043.8.498.12",
    patient_id="MRN|42^7",
    issuer_of_patient_id="HOSP&A",
    patient_name="O'Brien^Mary~Ann^J\\X^Dr^III",
    birth_date="19600102",
    sex="F",
    accession_number="ACC-1",
    study_date="20261201",
    study_time="101112.25",
    model_name="cxr-second-read",
    model_version="7",
    analysed_at=1_796_000_000.0,
    findings=(
        FlaggedFinding("pneumothorax", IMAGING_FINDING_CODES["pneumothorax"], 0.8712, 0.42),
        FlaggedFinding("nodule_mass", IMAGING_FINDING_CODES["nodule_mass"], 0.51, 0.5),
    ),
)


def oru(notice: Notice = NOTICE, **kw: object) -> str:
    """The ORU^R01 of ``notice`` as the node would write it (fixed clock)."""
    return oru_r01(
        notice,
        priority=kw.pop("priority", "asap"),
        sending_facility="ED",
        receiving_application="RIS",
        receiving_facility="RAD",
        now=1_796_000_100.0,
        **kw,
    )  # type: ignore[arg-type]


@dataclass
class MllpReceiver:
    """Keeps every message it receives (python-hl7 ``Message`` and the raw text); answers ``ack_code``."""

    ack_code: str = "AA"
    messages: list[Any] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # hl7apy validation errors: the test asserts none
    port: int = 0

    def _keep(self, text: str, message: Any) -> None:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        try:
            parse_message(
                text.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
            ).validate()
        except Exception as exc:  # any hl7apy complaint fails the test that reads ``errors``
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self.raw.append(text)
        self.messages.append(message)

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                self._keep(str(message), message)
                writer.writemessage(message.create_ack(ack_code=self.ack_code))
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()


@contextmanager
def mllp_receiver(ack_code: str = "AA", port: int = 0, ssl_context: Any = None) -> Iterator[MllpReceiver]:
    """An :class:`MllpReceiver` listening on 127.0.0.1 (``.port``; any free one unless ``port``; over TLS with
    ``ssl_context``) for the duration of the block."""
    import hl7.mllp

    receiver = MllpReceiver(ack_code=ack_code)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        server = await hl7.mllp.start_hl7_server(
            receiver._client, host="127.0.0.1", port=port, encoding="utf-8", ssl=ssl_context
        )
        holder["server"] = server
        receiver.port = int(server.sockets[0].getsockname()[1])
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    assert started.wait(10)
    try:
        yield receiver
    finally:

        async def close() -> None:
            holder["server"].close()
            await holder["server"].wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


class _FhirHandler(http.server.BaseHTTPRequestHandler):
    receiver: FhirReceiver

    def do_POST(self) -> None:
        receiver = self.receiver
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = receiver.status
        condition = unquote(self.headers.get("If-None-Exist", ""))
        refused = receiver.refusals.get(condition, 0)
        if refused < receiver.refuse_first:  # down for this Task's first tries
            receiver.refusals[condition] = refused + 1
            status = 503
        if status in (200, 201):
            task = json.loads(body)
            receiver.requests.append((self.path, dict(self.headers), task))
            try:
                from fhir.resources.R4B.task import Task

                Task.model_validate(task)
            except Exception as exc:
                receiver.errors.append(f"{type(exc).__name__}: {exc}")
            if condition and condition in receiver.conditions:
                status = 200
            else:
                receiver.conditions.add(condition)
                receiver.tasks.append(task)
                status = 201
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class FhirReceiver:
    """Tasks created (one per identifier), every request, and fhir.resources errors; ``status`` forces an answer
    (e.g. 503) instead of storing; ``refuse_first`` answers 503 to the first that many POSTs of each Task."""

    status: int = 201
    refuse_first: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    conditions: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    url: str = ""


@contextmanager
def fhir_receiver() -> Iterator[FhirReceiver]:
    """A :class:`FhirReceiver` at ``.url`` (``http://127.0.0.1:<port>/fhir``) for the duration of the block."""
    receiver = FhirReceiver()
    handler = type("Handler", (_FhirHandler,), {"receiver": receiver})
    with http_server(handler) as port:
        receiver.url = f"http://127.0.0.1:{port}/fhir"
        yield receiver
