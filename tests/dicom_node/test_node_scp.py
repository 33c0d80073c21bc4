"""The Storage SCP on loopback, driven by a pynetdicom SCU: allow-list at association, C-ECHO, every real fixture by
C-STORE in its own transfer syntax (compressed ones included), durable storage before success, non-radiograph
SOP classes accepted but not analysed, and failure statuses that never take the node down. No model is needed:
these nodes only receive."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000MC,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from models.imaging.dicom_read import read_dicom
from serving.dicom_node.intake import Intake, IntakeResult
from serving.dicom_node.queue_sqlite import SqliteQueue
from serving.dicom_node.scp import StorageSCP, decodable_transfer_syntaxes
from serving.dicom_node.settings import DicomNodeSettings

pytestmark = pytest.mark.slow  # associations with a running node

REJECTED_PERMANENT, SERVICE_USER = 0x01, 0x01
CALLING_AE_NOT_RECOGNISED, CALLED_AE_NOT_RECOGNISED = 0x03, 0x07


@pytest.fixture
def scp_factory(tmp_path):
    made = []

    def make(**overrides) -> tuple[StorageSCP, SqliteQueue, Intake]:
        cfg = DicomNodeSettings(work_dir=tmp_path, port=0, allowed_calling_aets="MODALITY,PACS2", **overrides)
        queue = SqliteQueue(tmp_path / "queue.db")
        intake = Intake(queue, cfg.resolved_storage_dir(), max_instance_bytes=cfg.max_instance_bytes)
        scp = StorageSCP(cfg, intake)
        made.append((scp, queue))
        return scp, queue, intake

    yield make
    for scp, queue in made:
        scp.stop()
        queue.close()


def _stored_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "dicom-in").rglob("*.dcm"))


def test_echo_from_an_allowed_ae_and_rejection_of_unknown_calling_or_called_titles(scp_factory, dicom_tools):
    scp, _, _ = scp_factory()
    assert scp.start() and scp.port
    ok = dicom_tools.send(scp.port, [], calling="PACS2", echo=True)
    assert ok.established and ok.statuses == [0x0000]
    stranger = dicom_tools.send(scp.port, [], calling="STRANGER", echo=True)
    assert not stranger.established
    assert stranger.rejection == (REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_NOT_RECOGNISED)
    wrong_called = dicom_tools.send(scp.port, [], calling="MODALITY", called="NOT-VIGIL", echo=True)
    assert wrong_called.rejection == (REJECTED_PERMANENT, SERVICE_USER, CALLED_AE_NOT_RECOGNISED)


def test_an_empty_allow_list_listens_on_nothing(tmp_path, caplog):
    cfg = DicomNodeSettings(work_dir=tmp_path, port=0)
    queue = SqliteQueue(tmp_path / "q.db")
    scp = StorageSCP(cfg, Intake(queue, tmp_path / "in", max_instance_bytes=1024))
    assert scp.start() is False and scp.port is None and not scp.listening
    assert "ALLOWED_CALLING_AETS is empty" in caplog.text
    queue.close()


@pytest.mark.realdata
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # CR-ModalitySequenceLUT's UIDs have leading zeros
def test_every_fixture_in_its_own_transfer_syntax_is_stored_durably_and_queued(
    scp_factory, fixtures_dir, tmp_path, dicom_tools
):
    scp, queue, _ = scp_factory()
    scp.start()
    files = dicom_tools.files(fixtures_dir, "chest", "other_cr", "derived", "negative")
    datasets = [dicom_tools.load(p) for p in files]
    sent = dicom_tools.send(scp.port, datasets)
    assert sent.established and sent.statuses == [0x0000] * len(files)
    # no transcoding: each went in the syntax it is stored in (JPEG baseline/extended/lossless, JPEG-LS, J2K, RLE...)
    for ds in datasets:
        assert sent.accepted_syntaxes[str(ds.SOPInstanceUID)] == str(ds.file_meta.TransferSyntaxUID)
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in datasets} == {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
    }
    unique = {str(ds.SOPInstanceUID): ds for ds in datasets}  # the negatives re-use their fixed twins' UIDs
    assert queue.counts()["received"] == len(unique)
    assert sum(i.duplicates for i in queue.list_items(limit=100)) == len(datasets) - len(unique)
    assert len(_stored_files(tmp_path)) == len(unique)  # duplicates' bytes are not kept twice
    for uid, first in ((str(ds.SOPInstanceUID), ds) for ds in reversed(datasets)):
        unique.setdefault(uid, first)
    for item in queue.list_items(limit=100):
        assert item.state == "received" and item.calling_aet == "MODALITY" and item.source == "dicom:c-store"
        stored = read_dicom(Path(item.file_path))
        original = next(ds for ds in datasets if str(ds.SOPInstanceUID) == item.sop_instance_uid)
        assert item.transfer_syntax == str(stored.file_meta.TransferSyntaxUID)
        assert item.study_instance_uid == str(original.StudyInstanceUID)
        assert stored.PixelData == original.PixelData  # the bytes as sent, not re-encoded


@pytest.mark.realdata
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_explicit_and_deflated_little_endian(scp_factory, fixtures_dir, dicom_tools, syntax):
    """No fixture is stored in these two; the legacy CR re-encoded (new SOP Instance UID) stands in."""
    ds = dicom_tools.load(fixtures_dir / "chest" / "CR-MONO1-10-chest")
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds = dcmread(io.BytesIO(_part10(ds)))
    scp, queue, _ = scp_factory()
    scp.start()
    sent = dicom_tools.send(scp.port, [ds])
    assert sent.statuses == [0x0000] and sent.accepted_syntaxes[ds.SOPInstanceUID] == syntax
    item = queue.get(ds.SOPInstanceUID)
    assert item.transfer_syntax == syntax
    assert read_dicom(Path(item.file_path)).PixelData == ds.PixelData


def _part10(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_other_storage_classes_are_accepted_but_not_analysed_and_not_kept(scp_factory, tmp_path, dicom_tools):
    path = get_testdata_file("CT_small.dcm", download=False)
    assert path is not None and Path(path).is_file()
    ct = dcmread(path)
    scp, queue, _ = scp_factory()
    scp.start()
    sent = dicom_tools.send(scp.port, [ct])
    assert sent.statuses == [0x0000]
    item = queue.get(str(ct.SOPInstanceUID))
    assert item.state == "not_analysed" and item.reason_field == "SOPClassUID"
    assert "CT Image Storage" in item.reason and item.file_path is None
    assert _stored_files(tmp_path) == []
    assert dicom_tools.send(scp.port, [ct]).statuses == [0x0000]  # sent again: still one item
    assert queue.counts()["not_analysed"] == 1 and queue.get(str(ct.SOPInstanceUID)).duplicates == 1


def test_radiograph_classes_negotiate_only_decodable_syntaxes(scp_factory):
    """An SCU offering CR only in a syntax we cannot decode is refused that context (so it falls back to another
    it offers); a class that is not analysed takes any syntax, since its bytes are not kept."""
    from pynetdicom import AE

    syntaxes = decodable_transfer_syntaxes()
    assert syntaxes[:4] == [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        ExplicitVRBigEndian,
    ]
    assert JPEG2000MC not in syntaxes and RLELossless in syntaxes and JPEGLSNearLossless in syntaxes
    scp, _, _ = scp_factory()
    scp.start()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ComputedRadiographyImageStorage, [JPEG2000MC])
    ae.add_requested_context(ComputedRadiographyImageStorage, [JPEG2000MC, ExplicitVRLittleEndian])
    ae.add_requested_context(CTImageStorage, [JPEG2000MC])
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="VIGIL")
    try:
        accepted = sorted((str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts)
        assert accepted == sorted(
            [(ComputedRadiographyImageStorage, ExplicitVRLittleEndian), (CTImageStorage, JPEG2000MC)]
        )
        assert [cx.result for cx in assoc.rejected_contexts] == [0x04]  # transfer syntaxes not supported
    finally:
        assoc.release()


@pytest.mark.realdata
def test_failures_answer_a_status_and_keep_the_association_usable(scp_factory, fixtures_dir, tmp_path, dicom_tools):
    small = dicom_tools.load(fixtures_dir / "chest" / "CR-MONO1-10-chest")
    scp, queue, intake = scp_factory()
    # The intake's own size check (a C-STORE over the node's limit is aborted while it arrives instead:
    # test_node_hardening.py::test_an_instance_over_the_limit_is_aborted_while_it_arrives)
    intake.max_instance_bytes = 100_000
    scp.start()
    sent = dicom_tools.send(scp.port, [small], echo=True)
    assert sent.statuses == [0xA700, 0x0000]  # too large: out of resources; the C-ECHO after it still works
    assert queue.counts()["received"] == 0 and _stored_files(tmp_path) == []

    def broken(*args, **kwargs) -> IntakeResult:
        raise RuntimeError("disk on fire")

    intake.max_instance_bytes = 10_000_000
    intake.receive = intake.receive_file = broken  # type: ignore[method-assign]
    assert dicom_tools.send(scp.port, [small], echo=True).statuses == [0xA700, 0x0000]
    queue.close()  # the queue going away: the bytes are not kept and the sender is told
    del intake.receive, intake.receive_file
    assert dicom_tools.send(scp.port, [small]).statuses == [0xA700]
    assert _stored_files(tmp_path) == []


@pytest.mark.realdata
def test_intake_of_part10_bytes_as_stow_rs_gives_it(tmp_path, fixtures_dir):
    """The STOW-RS route's path: UIDs read from the file itself; garbage is 'cannot understand', never a crash."""
    queue = SqliteQueue(tmp_path / "q.db")
    intake = Intake(queue, tmp_path / "in", max_instance_bytes=10_000_000)
    data = (fixtures_dir / "chest" / "RG1_JLSN.dcm").read_bytes()
    source = read_dicom(data)
    result = intake.receive(
        data, sop_class_uid=None, sop_instance_uid=None, calling_aet="key123", source="dicomweb:stow-rs"
    )
    assert (result.status, result.outcome) == (0x0000, "queued") and result.ok
    assert (result.sop_class_uid, result.sop_instance_uid, result.study_instance_uid) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
        source.StudyInstanceUID,
    )
    assert Path(result.item.file_path).read_bytes() == data and result.item.source == "dicomweb:stow-rs"
    assert (
        intake.receive(
            data, sop_class_uid=None, sop_instance_uid=None, calling_aet="key123", source="dicomweb:stow-rs"
        ).outcome
        == "duplicate"
    )
    for garbage in (b"", b"not dicom at all" * 10, data[:200]):
        bad = intake.receive(
            garbage, sop_class_uid=None, sop_instance_uid=None, calling_aet="key123", source="dicomweb:stow-rs"
        )
        assert (bad.status, bad.outcome, bad.item) == (0xC000, "failed", None)
    assert queue.counts()["received"] == 1 and len(list((tmp_path / "in").rglob("*.dcm"))) == 1
    queue.close()


@pytest.mark.realdata
def test_a_c_store_whose_command_and_dataset_name_different_instances_is_refused(
    scp_factory, fixtures_dir, tmp_path, dicom_tools, monkeypatch
):
    """Issue 14 finding 10: the queue would key on the command's Affected SOP Instance UID and the SR on the
    dataset's; the mismatch is answered 0xA900 (data set does not match) and nothing is stored or queued."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pynetdicom import AE, _config
    from pynetdicom.dsutils import split_dataset

    # sent chunked from the file, the C-STORE-RQ names the file meta's UIDs and the dataset goes as it is
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ds = dicom_tools.load(fixtures_dir / "chest" / "RG1_JLSN.dcm")
    command_uid = generate_uid()
    honest, forged = tmp_path / "honest.dcm", tmp_path / "forged.dcm"
    ds.save_as(honest, enforce_file_format=True)
    meta, offset = split_dataset(honest)
    meta.MediaStorageSOPInstanceUID = command_uid
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    forged.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + honest.read_bytes()[offset:])
    check = dcmread(forged, stop_before_pixels=True)
    assert (check.file_meta.MediaStorageSOPInstanceUID, check.SOPInstanceUID) == (command_uid, ds.SOPInstanceUID)
    honest.unlink()
    scp, queue, _ = scp_factory()
    scp.start()
    sent = dicom_tools.send(scp.port, [ds])  # an association offering the context; then the forged C-STORE
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="VIGIL")
    try:
        assert assoc.is_established and int(assoc.send_c_store(forged).Status) == 0xA900
    finally:
        assoc.release()
    assert sent.statuses == [0x0000]  # the same instance, honestly named, was taken
    assert queue.get(command_uid) is None
    assert [i.sop_instance_uid for i in queue.list_items(limit=10)] == [str(ds.SOPInstanceUID)]
    assert len(_stored_files(tmp_path)) == 1


@pytest.mark.realdata
def test_received_instances_and_written_results_are_private_to_the_node(tmp_path, fixtures_dir):
    """Issue 14 finding 15: instances, SRs and heat maps carry patient data: files 0600 in folders 0700, whatever
    the umask, and a storage folder left open by an older version is closed again."""
    import os
    import stat

    from serving.dicom_node.durable import write_durably

    (tmp_path / "in").mkdir(mode=0o755)
    old_umask = os.umask(0)
    try:
        queue = SqliteQueue(tmp_path / "q.db")
        intake = Intake(queue, tmp_path / "in", max_instance_bytes=10_000_000)
        result = intake.receive(
            (fixtures_dir / "chest" / "RG1_JLSN.dcm").read_bytes(),
            sop_class_uid=None,
            sop_instance_uid=None,
            calling_aet="key123",
            source="dicomweb:stow-rs",
        )
        sr = write_durably(tmp_path / "out" / "sr", b"an SR", suffix=".dcm")
        queue.close()
    finally:
        os.umask(old_umask)
    for path in (Path(result.item.file_path), sr):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent
        assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700, path.parent.parent
