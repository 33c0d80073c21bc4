"""`vigil dicom-node` as an operator runs it: a real process, C-ECHO and C-STORE from an SCU, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import ComputedRadiographyImageStorage, Verification

from serving.dicom_node.queue import open_queue
from tests.net import free_port

pytestmark = pytest.mark.slow  # starts the DICOM node as a process

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.realdata
def test_dicom_node_command_receives_analyses_and_stops(model_folder, fixtures_dir, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "VIGIL_WORK_DIR": str(tmp_path),
        "VIGIL_MODEL_SOURCE": "local",
        "VIGIL_MODEL_DIR": str(model_folder),
        "VIGIL_DICOM_PORT": str(port),
        "VIGIL_DICOM_ALLOWED_CALLING_AETS": "MODALITY1",
        "VIGIL_DICOM_POLL_S": "0.2",
        "VIGIL_THREADS": "1",
        "VIGIL_DICOM_NODE_HEARTBEAT": str(tmp_path / "node.heartbeat"),
    }
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "dicom-node"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    path = fixtures_dir / "chest" / "RG1_J2KI.dcm"
    ds = dcmread(path)
    try:
        ae = AE(ae_title="MODALITY1")
        ae.add_requested_context(Verification)
        ae.add_requested_context(ComputedRadiographyImageStorage, ds.file_meta.TransferSyntaxUID)
        deadline = time.monotonic() + 90
        listening = False
        while time.monotonic() < deadline and not listening and proc.poll() is None:
            try:  # a plain socket: pynetdicom leaks the socket of a refused association (fixed upstream, PR #999)
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    listening = True
            except OSError:
                time.sleep(0.5)
        assert listening, log_path.read_text()[-3000:]
        assoc = ae.associate("127.0.0.1", port, ae_title="VIGIL")
        assert assoc.is_established, log_path.read_text()[-3000:]
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        queue = open_queue(f"sqlite:///{(tmp_path / 'dicom_queue.db').resolve()}")
        deadline = time.monotonic() + 60
        item = queue.get(ds.SOPInstanceUID)
        while time.monotonic() < deadline and item is not None and item.state in ("received", "analysing"):
            time.sleep(0.3)
            item = queue.get(ds.SOPInstanceUID)
        assert item is not None and item.state == "analysed", (item, log_path.read_text()[-3000:])
        assert item.sr_sop_instance_uid
        queue.close()
        # while it serves, the node keeps its heartbeat fresh (what /readyz of `vigil serve` reads)
        assert time.time() - (tmp_path / "node.heartbeat").stat().st_mtime < 5
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert not (tmp_path / "node.heartbeat").exists()  # a stopped node is not reported as up
