"""Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) as the PACS around the DICOM node, as a site runs it.

Orthanc receives chest films (by its REST API, as from a modality), forwards each CR/DX series to Vigil once the
series is stable (a Lua ``OnStableSeries`` hook, Orthanc's own auto-routing), and receives the second-read SR and
the heat-map Secondary Capture back into the source study, where QIDO-RS (the DICOMweb plugin) finds them, with
the SR referencing its source. Orthanc is installed with apt-get when the tests run as root (:mod:`tests.apt_tools`),
else the module is skipped with the reason. Everything listens on 127.0.0.1; Orthanc keeps its files in tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from models.imaging.sr_read import read_second_read_sr
from tests.apt_tools import file_or_skip, tool_or_skip
from tests.net import free_port
from vigil.cli import app

pytestmark = pytest.mark.slow  # drives Orthanc as the PACS

#: Two small chest films (fast to decode): JPEG baseline CR, raw legacy CR.
FILMS = ("chest/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm", "chest/CR-MONO1-10-chest")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: Forward every CR/DX series to Vigil once no new instance has arrived for StableAge seconds; SR and SC series
#: (what Vigil sends back) are not forwarded.
FORWARD_LUA = """
function OnStableSeries(seriesId, tags, metadata)
  local modality = tags['Modality']
  if modality == 'CR' or modality == 'DX' then
    RestApiPost('/modalities/vigil/store', seriesId)
  end
end
"""


@contextmanager
def _orthanc(binary: str, work: Path, vigil_port: int, dicom_port: int, http_port: int | None = None) -> Iterator[str]:
    """Orthanc with the DICOMweb plugin, storing on ``dicom_port``, forwarding to Vigil on ``vigil_port``: yields
    its HTTP base URL."""
    http_port = http_port or free_port()
    work.mkdir(exist_ok=True)
    (work / "forward.lua").write_text(FORWARD_LUA, encoding="utf-8")
    config = {
        "Name": "VigilTestPACS",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "ORTHANC",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "StableAge": 1,
        "DicomModalities": {"vigil": ["VIGIL", "127.0.0.1", vigil_port]},
        "LuaScripts": [str(work / "forward.lua")],
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (work / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = work / "orthanc.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"Orthanc exited with {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                if requests.get(f"{base}/system", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"Orthanc did not answer: {log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def orthanc_binary() -> str:
    binary = tool_or_skip("Orthanc", "orthanc", "the tests with Orthanc as the PACS", also_look_in=[Path("/usr/sbin")])
    file_or_skip(DICOMWEB_PLUGIN, "orthanc-dicomweb", "the tests with Orthanc as the PACS")
    return binary


@pytest.mark.realdata
@pytest.mark.parametrize("queue_url", ["sqlite"], indirect=True)
def test_orthanc_forwards_stable_series_and_finds_the_sr_and_heat_map_in_the_source_study(
    orthanc_binary, node_factory, fixtures_dir, tmp_path
):
    from models.imaging.dicom_read import read_dicom

    dicom_port = free_port()
    node = node_factory(
        workers=2,
        allowed_calling_aets="ORTHANC",
        destination=f"ORTHANC@127.0.0.1:{dicom_port}",
        send_heatmap_sc=True,
        network_timeout_s=10,
    )
    node.start()
    orthanc_work = tmp_path / "orthanc"
    with _orthanc(orthanc_binary, orthanc_work, node.port, dicom_port) as base:
        sources = [read_dicom(fixtures_dir / name) for name in FILMS]
        for name in FILMS:  # as a modality's store would
            posted = requests.post(f"{base}/instances", data=(fixtures_dir / name).read_bytes(), timeout=30)
            assert posted.ok, posted.text
        found: dict[str, dict[str, list[dict]]] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for source in sources:
                study = str(source.StudyInstanceUID)
                series = requests.get(f"{base}/dicom-web/studies/{study}/series", timeout=10).json()
                found[study] = {}
                for entry in series:
                    found[study].setdefault(entry["00080060"]["Value"][0], []).append(entry)
            if all({"SR", "OT"} <= set(by_modality) for by_modality in found.values()) and len(found) == len(sources):
                break
            time.sleep(0.5)
        items = [(i.state, i.reason, i.last_error) for i in node.list_items()]
        for source in sources:
            by_modality = found[str(source.StudyInstanceUID)]
            assert {"SR", "OT"} <= set(by_modality), (
                by_modality.keys(),
                items,
                (orthanc_work / "orthanc.log").read_text()[-3000:],
            )
            (sr_series,) = by_modality["SR"]
            study, series_uid = str(source.StudyInstanceUID), sr_series["0020000E"]["Value"][0]
            (instance,) = requests.get(
                f"{base}/dicom-web/studies/{study}/series/{series_uid}/instances", timeout=10
            ).json()
            sop = instance["00080018"]["Value"][0]
            lookup = requests.post(f"{base}/tools/lookup", data=sop, timeout=10).json()
            (orthanc_id,) = [r["ID"] for r in lookup if r["Type"] == "Instance"]
            sr_bytes = requests.get(f"{base}/instances/{orthanc_id}/file", timeout=10).content
            report = read_second_read_sr(sr_bytes)
            assert report["referenced_sop_instance_uid"] == str(source.SOPInstanceUID)
        assert all(state == "delivered" for state, _, _ in items), items
        # what the node analysed came from Orthanc's forwarding, one item per film, not from this test
        listed = node.list_items()
        assert sorted(i.sop_instance_uid for i in listed) == sorted(str(s.SOPInstanceUID) for s in sources)
        assert {i.calling_aet for i in listed} == {"ORTHANC"}


def _series_by_modality(base: str, study: str) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for entry in requests.get(f"{base}/dicom-web/studies/{study}/series", timeout=10).json():
        found.setdefault(entry["00080060"]["Value"][0], []).append(entry)
    return found


@pytest.mark.realdata
@pytest.mark.parametrize("queue_url", ["sqlite"], indirect=True)
def test_results_go_back_by_stow_rs_with_retries_a_delivery_failed_list_and_a_resend(
    orthanc_binary, node_factory, fixtures_dir, dicom_tools, tmp_path
):
    """VIGIL_DICOM_STOW_URL alone (no C-STORE destination): while the archive is down the SR's delivery fails,
    is retried, and is kept as delivery_failed naming STOW-RS; once the archive is up, a re-send stores the SR and
    the heat map by STOW-RS into the source study, where QIDO-RS finds them."""
    from models.imaging.dicom_read import read_dicom

    http_port = free_port()
    node = node_factory(
        workers=1,
        allowed_calling_aets="MODALITY",
        stow_url=f"http://127.0.0.1:{http_port}/dicom-web",
        send_heatmap_sc=True,
        max_attempts=2,
        network_timeout_s=5,
    )
    node.start()
    source = read_dicom(fixtures_dir / FILMS[1])
    uid, study = str(source.SOPInstanceUID), str(source.StudyInstanceUID)
    assert dicom_tools.send(node.port, [source]).statuses == [0x0000]
    failed = dicom_tools.wait_for(lambda: (i := node.queue.get(uid)) and i.state == "delivery_failed" and i)
    assert failed.delivery_attempts == 2 and "STOW-RS to http://127.0.0.1" in failed.last_error
    # what an administrator sees and does: `vigil dicom-queue failed`, then `vigil dicom-queue redeliver UID`
    env = {"VIGIL_DICOM_QUEUE_URL": node.settings.queue_url, "VIGIL_DICOM_WORK_DIR": str(tmp_path)}
    listed = CliRunner().invoke(app, ["dicom-queue", "failed"], env=env)
    assert listed.exit_code == 0, listed.output
    (line,) = listed.output.splitlines()
    assert json.loads(line)["sop_instance_uid"] == uid and "STOW-RS" in json.loads(line)["last_error"]
    unknown = CliRunner().invoke(app, ["dicom-queue", "redeliver", "1.2.3.4"], env=env)
    assert unknown.exit_code == 2 and "not in delivery_failed" in unknown.output

    with _orthanc(orthanc_binary, tmp_path / "orthanc", node.port, free_port(), http_port) as base:
        again = CliRunner().invoke(app, ["dicom-queue", "redeliver", uid], env=env)
        assert again.exit_code == 0 and f"queued for delivery: {uid}" in again.output
        done = dicom_tools.wait_for(lambda: (i := node.queue.get(uid)) and i.state == "delivered" and i)
        found = _series_by_modality(base, study)
        assert {"SR", "OT"} <= set(found), found.keys()
        (sr_series,) = found["SR"]
        (instance,) = requests.get(
            f"{base}/dicom-web/studies/{study}/series/{sr_series['0020000E']['Value'][0]}/instances", timeout=10
        ).json()
        assert instance["00080018"]["Value"][0] == done.sr_sop_instance_uid
