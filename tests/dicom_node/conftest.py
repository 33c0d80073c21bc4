"""DICOM node fixtures: a tiny imaging model trained on synthetic data, a local model folder with a passing
release record, a SQLite audit store, the real DICOM fixtures, and queue back-ends (SQLite, Redis)."""

from __future__ import annotations

import io
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from serving.model_source import LocalFolderLocator, ModelHolder
from tests.net import free_port

PASSING_GATE = {
    "status": "pass",
    "policy_version": "test",
    "checked_utc": "2026-11-23T00:00:00Z",
    "summary": "test fixture",
}
FIXTURES = (
    Path(os.environ.get("VIGIL_DATA_DIR", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
    / "imaging"
    / "dicom_fixtures"
)
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def imaging_model_folder(model_folder) -> Path:
    """The shared local model folder (tests/conftest.py): its imaging model is released as version 7."""
    return model_folder


@pytest.fixture(scope="session")
def holder(imaging_model_folder) -> ModelHolder:
    """A model holder serving the imaging model only (shared by the tests: loading is the slow part)."""
    held = ModelHolder(LocalFolderLocator(imaging_model_folder), allow_unreleased=False, threads=1, tasks=("imaging",))
    held.load_all()
    return held


@pytest.fixture
def audit_store(tmp_path):
    from serving.store.database import Store

    store = Store(f"sqlite:///{tmp_path / 'serving.db'}")
    store.create_schema()
    yield store
    store.dispose()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "chest").is_dir():
        pytest.skip(f"DICOM fixtures not found at {FIXTURES} (set VIGIL_DATA_DIR to ../shared/data)")
    return FIXTURES


def _redis_or_skip(url: str):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url}: {type(exc).__name__}")
    return client


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request, tmp_path) -> Iterator[tuple[str, str]]:
    """``(queue_url, key_prefix)`` for each back-end; the Redis keys live under a unique prefix, deleted after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dicom_queue.db'}", ""
        return
    client = _redis_or_skip(REDIS_URL)
    prefix = f"vigil-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield REDIS_URL, prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
        client.close()


# ---------------------------------------------------------------------------------------------- DICOM helpers
def load_fixture(path: Path):
    """A fixture file as a dataset in its own transfer syntax (the raw legacy file gets Implicit VR LE)."""
    from models.imaging.dicom_read import read_dicom

    return read_dicom(path)


def fixture_files(root: Path, *folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (root / folder).iterdir() if p.is_file() and p.suffix != ".py")


def wait_for(predicate, timeout_s: float = 60.0, every_s: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


@dataclass
class Association:
    established: bool
    rejection: tuple[int, int, int] | None  # (result, source, diagnostic) of an A-ASSOCIATE-RJ
    statuses: list[int | None]
    accepted_syntaxes: dict[str, str]  # sop instance uid -> transfer syntax the context accepted


def scu_send(
    port: int, datasets, *, calling: str = "MODALITY", called: str = "VIGIL", echo: bool = False
) -> Association:
    """One association from ``calling``: each dataset in its own transfer syntax by C-STORE (and a C-ECHO)."""
    from pynetdicom import AE, evt
    from pynetdicom.pdu_primitives import A_ASSOCIATE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, [syntax])
    ae.add_requested_context(Verification)
    rejected: list[tuple[int, int, int]] = []

    def on_acse(event):
        primitive = event.primitive
        if isinstance(primitive, A_ASSOCIATE) and primitive.result not in (None, 0):
            rejected.append((primitive.result, primitive.result_source, primitive.diagnostic))

    assoc = ae.associate("127.0.0.1", port, ae_title=called, evt_handlers=[(evt.EVT_ACSE_RECV, on_acse)])
    out = Association(assoc.is_established, rejected[0] if rejected else None, [], {})
    if not assoc.is_established:
        return out
    try:
        by_pair = {(cx.abstract_syntax, cx.transfer_syntax[0]): cx for cx in assoc.accepted_contexts}
        for ds in datasets:
            cx = by_pair.get((str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
            if cx is None:
                out.statuses.append(None)
                continue
            status = assoc.send_c_store(ds)
            out.statuses.append(int(status.Status) if "Status" in status else None)
            out.accepted_syntaxes[str(ds.SOPInstanceUID)] = str(cx.transfer_syntax[0])
        if echo:
            status = assoc.send_c_echo()
            out.statuses.append(int(status.Status) if "Status" in status else None)
    finally:
        assoc.release()
    return out


class Destination:
    """A destination Storage SCP (the workstation's PACS) that keeps what it receives, as Part 10 bytes.

    ``fail_with`` makes it answer that status instead of storing (a PACS in trouble).
    """

    def __init__(self, ae_title: str = "PACS", port: int = 0) -> None:
        from pynetdicom import AE
        from pynetdicom.presentation import AllStoragePresentationContexts

        self.ae = AE(ae_title=ae_title)
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.received: list[bytes] = []
        self.calling: list[str] = []
        self.fail_with: int | None = None
        self._server = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def _on_store(self, event):
        if self.fail_with is not None:
            return self.fail_with
        with self._lock:
            self.received.append(event.encoded_dataset(include_meta=True))
            self.calling.append(str(event.assoc.requestor.ae_title).strip())
        return 0x0000

    def start(self, ssl_context=None) -> Destination:
        """Listen (over TLS when ``ssl_context`` is given: a PACS that requires it)."""
        from pynetdicom import evt

        self._server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def datasets(self):
        from pydicom import dcmread

        with self._lock:
            return [dcmread(io.BytesIO(data)) for data in self.received]


@pytest.fixture
def destination() -> Iterator[Destination]:
    dest = Destination().start()
    yield dest
    dest.stop()


@pytest.fixture
def node_factory(tmp_path, holder, audit_store, queue_url):
    """Make :class:`DicomNode` objects over one work folder and one queue (SQLite or Redis); all stopped after."""
    from serving.dicom_node.node import DicomNode
    from serving.dicom_node.settings import DicomNodeSettings

    url, prefix = queue_url
    made = []

    def make(node_id: str = "test-node", **overrides) -> DicomNode:
        values = {
            "work_dir": tmp_path,
            "port": 0,
            "allowed_calling_aets": "MODALITY",
            "queue_url": url,
            "queue_prefix": prefix or "vigil:dicom:",
            "poll_s": 0.05,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "network_timeout_s": 5,
            "stop_timeout_s": 10,
            **overrides,
        }
        node = DicomNode(DicomNodeSettings(**values), holder, audit_store, node_id=node_id, rng=random.Random(0))
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop(timeout_s=5)


@pytest.fixture
def scp_factory(tmp_path):
    """``make(**settings)`` -> (scp, intake): a Storage SCP alone (no workers) on a free port, over a SQLite queue,
    admitting AE title MODALITY; every one stopped after the test."""
    from serving.dicom_node.intake import Intake
    from serving.dicom_node.queue_sqlite import SqliteQueue
    from serving.dicom_node.scp import StorageSCP
    from serving.dicom_node.settings import DicomNodeSettings

    made = []

    def make(**overrides):
        cfg = DicomNodeSettings(**{"work_dir": tmp_path, "port": 0, "allowed_calling_aets": "MODALITY", **overrides})
        queue = SqliteQueue(tmp_path / "queue.db")
        intake = Intake(queue, cfg.resolved_storage_dir(), max_instance_bytes=cfg.max_instance_bytes)
        scp = StorageSCP(cfg, intake)
        made.append((scp, queue))
        assert scp.start() and scp.port
        return scp, intake

    yield make
    for scp, queue in made:
        scp.stop()
        queue.close()


def zero_radiograph(side: int):
    """A CR instance of ``side`` x ``side`` 16-bit zeros with its file meta (never decoded by these tests)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ComputedRadiographyImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = ComputedRadiographyImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CR"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(side * side * 2)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    return ds


@pytest.fixture(scope="session")
def dicom_tools() -> SimpleNamespace:
    """The helpers above, for test modules (tests/ has no packages to import them from)."""
    return SimpleNamespace(
        load=load_fixture,
        files=fixture_files,
        send=scu_send,
        wait_for=wait_for,
        Destination=Destination,
        free_port=free_port,
    )
