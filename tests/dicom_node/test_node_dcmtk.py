"""The DICOM node between third-party peers: dcmtk plays the modality (``echoscu``, ``storescu``) and the PACS
(``storescp``), and ``dsrdump`` (plus ``dciodvfy`` of dicom3tools, where it can be had) reads every SR Vigil sends.

Nothing here is pynetdicom talking to pynetdicom: the peers are another toolkit's, so an encoding both ends of
pynetdicom would agree on wrongly is caught. The tools are installed with apt-get when the tests run as root
(:mod:`tests.apt_tools`), else the tests are skipped with the reason. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset

from models.imaging.sr_read import read_second_read_sr
from models.labels import IMAGING_FINDING_CODES
from serving.dicom_node.records import QueueItem
from tests.apt_tools import tool_or_skip
from tests.net import free_port

pytestmark = pytest.mark.slow  # drives dcmtk as modality and PACS

#: The fixtures sent: every chest radiograph of <data>/imaging/dicom_fixtures (chest/ and derived/, the two RLE
#: copies): eight files, all sent, read by the small test model of tests/conftest.py and delivered in about 5 s on
#: two shared cores, so none is left out.
FOLDERS = ("chest", "derived")
#: storescu's option that proposes a file's transfer syntax. By default storescu proposes the uncompressed syntaxes
#: only and decompresses (when it can) whatever else it sends; ``-x?`` proposes one compressed syntax first, the
#: uncompressed ones as the fallback, and storescu sends a file as it is when its own syntax is accepted.
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}
DCMTK_TIMEOUTS = ["-to", "10", "-ta", "10", "-td", "30"]
PENDING = ("received", "analysing", "analysed", "delivering")
_CONVERTING = re.compile(r"Converting transfer syntax: (.+?) -> (.+?)\s*$", re.MULTILINE)
#: dcmtk's logger prints "E: ..." and "W: ..." (and "F: ..." for fatal) on stderr.
_DCMTK_PROBLEM = re.compile(r"^(?:[EWF]: |.*\b(?:Error|Warning)\b)", re.MULTILINE)


@dataclass(frozen=True)
class Dcmtk:
    echoscu: str
    storescu: str
    storescp: str
    dsrdump: str


@pytest.fixture(scope="module")
def dcmtk() -> Dcmtk:
    """dcmtk's tools (installed with apt-get when this runs as root), or the module is skipped with the reason."""
    purpose = "the tests with dcmtk as modality and PACS around the DICOM node"
    return Dcmtk(*(tool_or_skip(name, "dcmtk", purpose) for name in ("echoscu", "storescu", "storescp", "dsrdump")))


@pytest.fixture(scope="module")
def dciodvfy() -> str | None:
    """dicom3tools' IOD validator, or ``None`` (the tests that would use it then check without it)."""
    try:
        return tool_or_skip("dciodvfy", "dicom3tools", "the IOD checks of Vigil's SR")
    except pytest.skip.Exception:
        return None


def _echo(echoscu: str, port: int, *, calling: str, called: str = "VIGIL") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [echoscu, "-aet", calling, "-aec", called, *DCMTK_TIMEOUTS, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ---------------------------------------------------------------------------------------------- C-ECHO
@pytest.mark.parametrize("queue_url", ["sqlite"], indirect=True)
def test_echoscu_from_an_allowed_ae_is_answered_and_from_another_ae_refused(node_factory, dcmtk):
    node = node_factory(workers=0)
    node.start()

    allowed = _echo(dcmtk.echoscu, node.port, calling="MODALITY")
    assert allowed.returncode == 0, allowed.stderr[-2000:]

    stranger = _echo(dcmtk.echoscu, node.port, calling="STRANGER")
    assert stranger.returncode != 0
    assert "Association Rejected" in stranger.stderr, stranger.stderr[-2000:]
    assert "Calling AE Title Not Recognized" in stranger.stderr, stranger.stderr[-2000:]

    wrong_called = _echo(dcmtk.echoscu, node.port, calling="MODALITY", called="NOT-VIGIL")
    assert wrong_called.returncode != 0
    assert "Called AE Title Not Recognized" in wrong_called.stderr, wrong_called.stderr[-2000:]


# ------------------------------------------------------------------------------------ modality -> node -> PACS
@dataclass(frozen=True)
class Sent:
    """One fixture through the chain: what the modality sent, the node's queue item, the SR the PACS stored."""

    name: str
    source: Dataset
    item: QueueItem
    report: Path


@pytest.fixture(scope="module")
def through_the_node(dcmtk, holder, fixtures_dir, dicom_tools, tmp_path_factory) -> Iterator[list[Sent]]:
    """storescu sends every chest fixture to a running node whose VIGIL_DICOM_DESTINATION is storescp; the node
    reads each with the small test model and delivers one SR each. Module-scoped: the tests below read the result."""
    from serving.dicom_node.node import DicomNode
    from serving.dicom_node.settings import DicomNodeSettings
    from serving.store.database import Store

    work = tmp_path_factory.mktemp("dcmtk-node")
    store = Store(f"sqlite:///{work / 'serving.db'}")
    store.create_schema()
    with _storescp(dcmtk, work) as (destination, pacs), pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIGIL_DICOM_DESTINATION", destination)  # as an operator configures it
        settings = DicomNodeSettings(
            work_dir=work,
            port=0,
            allowed_calling_aets="MODALITY",
            workers=2,
            poll_s=0.05,
            backoff_base_s=0.05,
            backoff_max_s=0.2,
            network_timeout_s=10,
        )
        assert settings.destination == destination
        node = DicomNode(settings, holder, store, node_id="dcmtk-node", rng=random.Random(0))
        node.start()
        try:
            yield _send_and_collect(dcmtk, node, dicom_tools.files(fixtures_dir, *FOLDERS), pacs)
        finally:
            node.stop(timeout_s=5)
            store.dispose()


@contextmanager
def _storescp(dcmtk: Dcmtk, work: Path) -> Iterator[tuple[str, Path]]:
    """dcmtk's storescp as the PACS: ``(AET@127.0.0.1:port, its output folder)``; +B keeps the bytes as received,
    so dsrdump reads what Vigil encoded, not dcmtk's re-encoding of it."""
    port, pacs, log = free_port(), work / "pacs", work / "storescp.log"
    pacs.mkdir()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [dcmtk.storescp, "-aet", "PACS", "+xa", "+B", "-od", str(pacs), "-ta", "10", "-td", "30", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while _echo(dcmtk.echoscu, port, calling="VIGIL", called="PACS").returncode != 0:
            assert proc.poll() is None, f"storescp exited with {proc.returncode}: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"storescp never answered C-ECHO: {log.read_text()[-2000:]}"
            time.sleep(0.1)
        yield f"PACS@127.0.0.1:{port}", pacs
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _send_and_collect(dcmtk: Dcmtk, node, paths: list[Path], pacs: Path) -> list[Sent]:
    from models.imaging.dicom_read import read_dicom

    sources = {p.name: read_dicom(p) for p in paths}
    for path in paths:  # one association per file, proposing that file's transfer syntax (see PROPOSE)
        syntax = str(sources[path.name].file_meta.TransferSyntaxUID)
        assert syntax in PROPOSE, f"{path.name}: no storescu option proposes transfer syntax {syntax}"
        sent = subprocess.run(
            [
                dcmtk.storescu,
                "-v",
                "-R",
                PROPOSE[syntax],
                "-aet",
                "MODALITY",
                "-aec",
                "VIGIL",
                *DCMTK_TIMEOUTS,
                "127.0.0.1",
                str(node.port),
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, (path.name, sent.stderr[-3000:])
        # Had the node refused that syntax, storescu would have fallen back to an uncompressed one and said so
        # ("Converting transfer syntax: JPEG Baseline -> Little Endian Explicit"; "X -> X" is its no-op).
        for before, after in _CONVERTING.findall(sent.stderr):
            assert before == after, (path.name, f"storescu converted {before} to {after}")

    def delivered_and_written() -> list[Path] | None:
        counts = node.queue.counts()
        reports = sorted(pacs.glob("SR*.*"))  # storescp names files <modality>.<SOP Instance UID>: SR3.1.2...
        return reports if not any(counts[s] for s in PENDING) and len(reports) == len(paths) else None

    deadline = time.monotonic() + 60
    while not (reports := delivered_and_written()):
        if time.monotonic() > deadline:
            items = [(i.state, i.reason, i.last_error) for i in node.list_items()]
            raise AssertionError(
                f"not every SR reached storescp within 60 s: queue {node.queue.counts()}, items "
                f"{items}, at the PACS {sorted(p.name[:4] for p in pacs.iterdir())}, storescp "
                f"said {(pacs.parent / 'storescp.log').read_text()[-2000:]}"
            )
        time.sleep(0.05)
    by_sr = {p.name.split(".", 1)[1]: p for p in reports}
    out = []
    for name, source in sources.items():
        item = node.queue.get(str(source.SOPInstanceUID))
        assert item is not None, name
        out.append(Sent(name, source, item, by_sr.get(item.sr_sop_instance_uid or "", pacs / "missing")))
    return out


@pytest.mark.realdata
def test_storescu_instances_are_kept_in_their_own_syntax_and_one_sr_each_reaches_storescp(through_the_node):
    assert len(through_the_node) >= 2
    for sent in through_the_node:
        assert sent.item.state == "delivered" and sent.item.calling_aet == "MODALITY", sent.name
        assert sent.item.transfer_syntax == str(sent.source.file_meta.TransferSyntaxUID), sent.name
        assert sent.report.is_file(), sent.name
    assert len({sent.report for sent in through_the_node}) == len(through_the_node)


@pytest.mark.realdata
def test_dsrdump_reads_every_sr_without_a_complaint_and_shows_its_findings_and_algorithm(through_the_node, dcmtk):
    for sent in through_the_node:
        dumped = subprocess.run(
            [dcmtk.dsrdump, "+Pc", "+Pu", "+Pl", "+Pt", str(sent.report)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert dumped.returncode == 0, (sent.name, dumped.stderr[-3000:])
        assert not _DCMTK_PROBLEM.search(dumped.stderr), (sent.name, dumped.stderr[-3000:])
        text = dumped.stdout
        assert text.startswith("Comprehensive 3D SR Document"), (sent.name, text[:500])
        assert '(126000,DCM,"Imaging Measurement Report")' in text and "TID 1500 (DCMR)" in text, sent.name
        assert str(sent.source.SOPInstanceUID) in text, sent.name  # the image it reports on
        read = read_second_read_sr(sent.report.read_bytes())
        assert read["referenced_sop_instance_uid"] == sent.source.SOPInstanceUID
        algorithm = read["algorithm"]
        assert algorithm["version"] == sent.item.model_version, sent.name
        assert f'(111001,DCM,"Algorithm Name")="{algorithm["name"]}"' in text, sent.name
        assert f'(111003,DCM,"Algorithm Version")="{algorithm["version"]}"' in text, sent.name
        assert set(read["findings"]) == set(sent.item.result["probabilities"]), sent.name
        for finding in read["findings"]:
            value, scheme, meaning = IMAGING_FINDING_CODES[finding]
            assert f'(121071,DCM,"Finding")=({value},{scheme},"{meaning}")' in text, (sent.name, finding)


def _dciodvfy_errors(dciodvfy: str | None, sents: list[Sent]) -> dict[str, list[str]]:
    if dciodvfy is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed and cannot be: the IOD checks of the SR are not run")
    out = {}
    for sent in sents:
        checked = subprocess.run([dciodvfy, str(sent.report)], capture_output=True, text=True, timeout=30, check=False)
        out[sent.name] = [line for line in checked.stderr.splitlines() if line.startswith("Error")]
    return out


@pytest.mark.realdata
def test_dciodvfy_finds_no_error_in_any_sr(through_the_node, dciodvfy):
    errors = _dciodvfy_errors(dciodvfy, through_the_node)
    assert not any(errors.values()), errors
