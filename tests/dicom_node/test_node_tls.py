"""Issue 14, "deliver as well": TLS (PS3.15 secure transport) and a network allow-list on the DICOM node.

A CA, the node's certificate, a modality's client certificate, a PACS's certificate and a rogue CA with its own
certificates are made with ``cryptography`` once per session. pynetdicom plays the modality and the PACS; dcmtk's
``storescu +tls`` plays a third-party modality (installed with apt-get when possible, else skipped with the reason).
Loopback only (127.0.0.2 is used as a second source address: all of 127.0.0.0/8 is loopback on Linux); no model.
"""

from __future__ import annotations

import datetime as dt
import gc
import ipaddress
import logging
import os
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import EnhancedSRStorage, ExplicitVRLittleEndian, generate_uid

from models.errors import ConfigError
from serving.dicom_node.delivery import DeliveryError, send_instances
from serving.dicom_node.intake import Intake
from serving.dicom_node.notify_mllp import send_mllp
from serving.dicom_node.scp import StorageSCP
from serving.dicom_node.settings import DicomNodeSettings, load_dicom_settings
from serving.dicom_node.tls import address_allowed, parse_networks
from tests.apt_tools import tool_or_skip
from tests.dicom_node.conftest import zero_radiograph

pytestmark = pytest.mark.slow  # TLS associations with generated certificates

#: pynetdicom drops the socket of a failed association unclosed (pydicom/pynetdicom#999); the tests where the node
#: refuses one ignore that ResourceWarning, and only that one, and collect the socket before they end.
SCU_LEAK = r"ignore:unclosed <(socket\.socket|ssl\.SSLSocket):ResourceWarning"
LOOPBACK_2 = "127.0.0.2"


class _NoExceptionRecords(logging.Filter):
    """Drops pynetdicom's records that carry an exception (each repeats the error line logged just before)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None and not isinstance(record.msg, BaseException)


@pytest.fixture(autouse=True)
def _pynetdicom_exceptions_not_kept():
    """pynetdicom logs a failed connection with its exception, whose traceback holds the SCU's unclosed socket;
    pytest keeps log records until after the test, when that socket would be collected out of SCU_LEAK's reach."""
    no_exceptions = _NoExceptionRecords()
    loggers = [logging.getLogger(f"pynetdicom.{name}") for name in ("acse", "association", "dimse", "dul", "transport")]
    for logger in loggers:
        logger.addFilter(no_exceptions)
    yield
    for logger in loggers:
        logger.removeFilter(no_exceptions)


# ---------------------------------------------------------------------------------------------- certificates
@dataclass(frozen=True)
class Credentials:
    cert: Path
    key: Path


@dataclass(frozen=True)
class PKI:
    ca: Path
    node: Credentials  # the node: server certificate of the SCP, client certificate of the SR sender
    modality: Credentials
    pacs: Credentials
    rogue_ca: Path
    rogue_modality: Credentials  # issued by the rogue CA
    rogue_pacs: Credentials


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> PKI:
    """Certificates for the tests (EC P-256: fast to make; the node's, the modality's and the PACS's carry
    127.0.0.1 and localhost as subject alternative names)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        path.chmod(0o600)
        return path

    def make_ca(common: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(name(common))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        path = folder / f"{common}.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert, key, path

    def issue(ca, common: str) -> Credentials:
        ca_cert, ca_key, _ = ca
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        cert_path = folder / f"{common}.crt"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Credentials(cert_path, write_key(key, folder / f"{common}.key"))

    ca, rogue = make_ca("vigil-test-ca"), make_ca("rogue-ca")
    return PKI(
        ca=ca[2],
        node=issue(ca, "vigil-node"),
        modality=issue(ca, "modality"),
        pacs=issue(ca, "pacs"),
        rogue_ca=rogue[2],
        rogue_modality=issue(rogue, "rogue-modality"),
        rogue_pacs=issue(rogue, "rogue-pacs"),
    )


def client_context(pki: PKI, credentials: Credentials | None) -> ssl.SSLContext:
    """A modality's TLS context: trusts the test CA, presents ``credentials`` (None: no client certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=pki.ca)
    if credentials is not None:
        context.load_cert_chain(credentials.cert, credentials.key)
    return context


def pacs_context(pki: PKI, credentials: Credentials) -> ssl.SSLContext:
    """A PACS's TLS server context that requires a client certificate from the test CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(credentials.cert, credentials.key)
    context.load_verify_locations(cafile=pki.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# ---------------------------------------------------------------------------------------------- the node's SCP
@pytest.fixture
def scp(scp_factory, pki):
    """``make(tls=True, **settings)`` -> (scp, intake): the Storage SCP listening on a free port (over TLS with the
    node's certificate unless ``tls=False``); stopped after the test."""

    def make(*, tls: bool = True, **overrides) -> tuple[StorageSCP, Intake]:
        values: dict[str, object] = {"network_timeout_s": 5}
        if tls:
            values.update(tls_cert=pki.node.cert, tls_key=pki.node.key, tls_ca=pki.ca)
        return scp_factory(**{**values, **overrides})

    return make


def _radiograph() -> Dataset:
    return zero_radiograph(16)


def associate(
    port: int, *, tls: ssl.SSLContext | None = None, bind: str | None = None, store: Dataset | None = None
) -> list[int] | None:
    """One association from MODALITY: the statuses of a C-STORE of ``store`` (if given) and a C-ECHO, or None when
    the association was not established (refused, or closed by the node)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = 5
    ae.add_requested_context(Verification)
    if store is not None:
        ae.add_requested_context(store.SOPClassUID, [ExplicitVRLittleEndian])
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="VIGIL",
        tls_args=(tls, "127.0.0.1") if tls else None,
        bind_address=(bind, 0) if bind else None,
    )
    if not assoc.is_established:
        assoc = None
        _collect_scu_sockets()
        return None
    try:
        statuses = []
        if store is not None:
            statuses.append(int(assoc.send_c_store(store).Status))
        statuses.append(int(assoc.send_c_echo().Status))
        return statuses
    finally:
        assoc.release()


def _collect_scu_sockets() -> None:
    """Let pynetdicom's requestor threads end, then collect the sockets they leave unclosed (see SCU_LEAK)."""
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider

    for thread in threading.enumerate():
        if isinstance(thread, DULServiceProvider | Association) and thread is not threading.current_thread():
            thread.join(5)
    gc.collect()


def _seconds_until_closed(sock: socket.socket, limit_s: float) -> float | None:
    """Seconds until the node closes ``sock`` (what it sends first is dropped); None if still open after limit_s."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < limit_s:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def _wait(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------- TLS at the SCP
def test_a_tls_association_from_an_allowed_address_stores_and_echoes(scp, pki, caplog):
    caplog.set_level(logging.INFO, logger="serving.dicom_node")
    node, intake = scp(allowed_networks="127.0.0.1, 10.0.0.0/8")
    ds = _radiograph()
    assert associate(node.port, tls=client_context(pki, pki.modality), store=ds) == [0x0000, 0x0000]
    assert intake.queue.get(ds.SOPInstanceUID) is not None
    assert "TLS 1.2+ only, client certificate from VIGIL_DICOM_TLS_CA required" in caplog.text


@pytest.mark.filterwarnings(SCU_LEAK)
def test_a_plain_association_to_the_tls_port_is_refused(scp, caplog):
    node, intake = scp()
    assert associate(node.port, store=_radiograph()) is None
    assert "TLS handshake failed" in caplog.text
    _wait(lambda: node.guard.open_connections == 0)
    assert intake.queue.counts()["received"] == 0


@pytest.mark.filterwarnings(SCU_LEAK)
def test_a_client_without_a_certificate_is_refused_when_client_certificates_are_required(scp, pki, caplog):
    required, _ = scp()
    assert associate(required.port, tls=client_context(pki, None)) is None
    assert "TLS handshake failed" in caplog.text
    optional, _ = scp(tls_require_client_cert=False)  # the same client, where a certificate is optional
    assert associate(optional.port, tls=client_context(pki, None)) == [0x0000]


@pytest.mark.filterwarnings(SCU_LEAK)
def test_a_client_certificate_from_another_ca_is_refused(scp, pki, caplog):
    node, _ = scp(tls_require_client_cert=False)  # even where a certificate is optional, a presented one must verify
    assert associate(node.port, tls=client_context(pki, pki.rogue_modality)) is None
    assert "TLS handshake failed" in caplog.text
    assert associate(node.port, tls=client_context(pki, pki.modality)) == [0x0000]


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_2_is_accepted_and_tls_1_1_refused_by_the_node(scp, pki):
    node, _ = scp()
    tls12 = client_context(pki, pki.modality)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert associate(node.port, tls=tls12) == [0x0000]
    old = client_context(pki, pki.modality)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 would not even offer TLS 1.1 at its default level
    with (
        socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw,
        pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"),
    ):  # the node's alert, not our own refusal
        old.wrap_socket(raw, server_hostname="127.0.0.1")


# ---------------------------------------------------------------------------------------------- allow-list
@pytest.mark.filterwarnings(SCU_LEAK)
@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_an_address_outside_the_allow_list_is_closed_at_accept(scp, pki, caplog, tls):
    node, _ = scp(tls=tls, allowed_networks=f"{LOOPBACK_2}/32")
    context = client_context(pki, pki.modality) if tls else None
    assert associate(node.port, tls=context) is None  # from 127.0.0.1
    with socket.create_connection(("127.0.0.1", node.port), timeout=5) as raw:  # closed before it sends anything
        closed_s = _seconds_until_closed(raw, 3.0)
    assert closed_s is not None and closed_s < 1.0
    assert (
        "DICOM connection from 127.0.0.1 refused at accept: address not in VIGIL_DICOM_ALLOWED_NETWORKS" in caplog.text
    )
    assert node.guard.open_connections == 0  # never counted
    assert associate(node.port, tls=context, bind=LOOPBACK_2) == [0x0000]  # the allowed address gets in


def test_the_allow_list_takes_ipv4_and_ipv6_addresses_and_networks():
    networks = parse_networks("10.20.0.0/16, 192.168.1.7, fd00::/64, ::1")
    assert [str(n) for n in networks] == ["10.20.0.0/16", "192.168.1.7/32", "fd00::/64", "::1/128"]
    assert address_allowed("10.20.3.4", networks) and address_allowed("192.168.1.7", networks)
    assert not address_allowed("10.21.0.1", networks) and not address_allowed("192.168.1.8", networks)
    assert address_allowed("fd00::abcd", networks) and address_allowed("::1", networks)
    assert not address_allowed("fd01::1", networks)
    assert address_allowed("::ffff:10.20.0.9", networks)  # a dual-stack socket's IPv4 peer
    assert not address_allowed("not-an-address", networks)
    assert DicomNodeSettings(allowed_networks=" 10.0.0.1 ,fd00::/64,").allowed_networks == "10.0.0.1/32,fd00::/64"


# ---------------------------------------------------------------------------------------------- handshake deadline
def test_an_idle_tls_socket_neither_blocks_others_nor_outlives_the_pre_association_timeout(scp, pki, caplog):
    """pynetdicom does the server handshake in its accepting thread: one silent socket stopped every accept. Here
    it is done in the connection's thread, within pre_association_timeout_s of the connection."""
    node, _ = scp(pre_association_timeout_s=1.0)
    idle = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    trickle = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    stop = threading.Event()

    def drip() -> None:  # a TLS handshake record header, then a byte every 0.1 s: never a whole ClientHello
        for byte in b"\x16\x03\x01\x02\x00" + bytes(512):
            if stop.wait(0.1):
                return
            try:
                trickle.send(bytes([byte]))
            except OSError:
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        started = time.monotonic()
        assert associate(node.port, tls=client_context(pki, pki.modality)) == [0x0000]
        assert time.monotonic() - started < 1.0  # not held up behind the idle socket
        idle_s = _seconds_until_closed(idle, 4.0)
        trickle_s = _seconds_until_closed(trickle, 4.0)
    finally:
        stop.set()
        dripper.join()
        idle.close()
        trickle.close()
    assert idle_s is not None and idle_s < 2.5, "an idle socket outlived the pre-association timeout"
    assert trickle_s is not None and trickle_s < 2.5, "a trickled handshake outlived the pre-association timeout"
    assert "no TLS handshake within 1.0 s of connecting (VIGIL_DICOM_PRE_ASSOCIATION_TIMEOUT_S)" in caplog.text
    _wait(lambda: node.guard.open_connections == 0)


# ---------------------------------------------------------------------------------------------- the SR sender
def _sr_file(folder: Path) -> tuple[Path, str]:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedSRStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    path = folder / "sr.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    return path, str(ds.SOPInstanceUID)


@pytest.fixture
def tls_pacs(pki, dicom_tools):
    """``start(credentials)`` -> a PACS over TLS presenting ``credentials`` and requiring a client certificate."""
    started = []

    def start(credentials: Credentials):
        pacs = dicom_tools.Destination().start(ssl_context=pacs_context(pki, credentials))
        started.append(pacs)
        return pacs

    yield start
    for pacs in started:
        pacs.stop()


def test_the_sr_sender_delivers_over_tls_with_the_node_certificate(tls_pacs, pki, tmp_path):
    pacs = tls_pacs(pki.pacs)
    cfg = DicomNodeSettings(
        work_dir=tmp_path,
        destination=pacs.address,
        pacs_tls=True,
        tls_ca=pki.ca,
        tls_cert=pki.node.cert,
        tls_key=pki.node.key,
    )
    path, uid = _sr_file(tmp_path)
    send_instances([path], cfg.destination_peer(), calling_aet="VIGIL", timeout_s=5)  # the worker's call
    assert [str(ds.SOPInstanceUID) for ds in pacs.datasets()] == [uid] and pacs.calling == ["VIGIL"]


@pytest.mark.filterwarnings(SCU_LEAK)
def test_the_sr_sender_refuses_a_pacs_it_cannot_verify_and_does_not_fall_back_to_plain(tls_pacs, pki, tmp_path):
    path, _ = _sr_file(tmp_path)
    rogue = tls_pacs(pki.rogue_pacs)  # a certificate the node's CA did not issue
    cfg = DicomNodeSettings(
        work_dir=tmp_path,
        destination=rogue.address,
        pacs_tls=True,
        tls_ca=pki.ca,
        tls_cert=pki.node.cert,
        tls_key=pki.node.key,
    )
    with pytest.raises(DeliveryError, match="the TLS handshake failed"):
        send_instances([path], cfg.destination_peer(), calling_aet="VIGIL", timeout_s=5)
    pacs = tls_pacs(pki.pacs)
    plain = DicomNodeSettings(work_dir=tmp_path, destination=pacs.address)  # PACS TLS not configured
    with pytest.raises(DeliveryError, match="could not be established"):
        send_instances([path], plain.destination_peer(), calling_aet="VIGIL", timeout_s=5)
    assert rogue.received == [] and pacs.received == []
    _collect_scu_sockets()


# ---------------------------------------------------------------------------------------------- MLLP over TLS
def test_the_worklist_notification_goes_over_tls_with_the_node_certificate(pki, tmp_path):
    from tests.dicom_node.worklist import NOTICE, mllp_receiver
    from tests.dicom_node.worklist import oru as _oru

    with mllp_receiver(ssl_context=pacs_context(pki, pki.pacs)) as ris:  # a RIS requiring a client certificate
        cfg = DicomNodeSettings(
            work_dir=tmp_path,
            notify_hl7=f"127.0.0.1:{ris.port}",
            notify_hl7_tls=True,
            tls_ca=pki.ca,
            tls_cert=pki.node.cert,
            tls_key=pki.node.key,
        )
        host, port, tls = cfg.notify_hl7_peer()
        send_mllp(_oru(), host, port, control_id=NOTICE.control_id, timeout_s=5, tls=tls.context())  # the worker's
    assert ris.errors == [] and len(ris.messages) == 1


def test_the_worklist_notification_refuses_a_listener_it_cannot_verify(pki, tmp_path):
    from tests.dicom_node.worklist import NOTICE, mllp_receiver
    from tests.dicom_node.worklist import oru as _oru

    with mllp_receiver(ssl_context=pacs_context(pki, pki.rogue_pacs)) as rogue:
        cfg = DicomNodeSettings(
            work_dir=tmp_path,
            notify_hl7=f"127.0.0.1:{rogue.port}",
            notify_hl7_tls=True,
            tls_ca=pki.ca,
            tls_cert=pki.node.cert,
            tls_key=pki.node.key,
        )
        host, port, tls = cfg.notify_hl7_peer()
        with pytest.raises(DeliveryError, match="TLS failed"):
            send_mllp(_oru(), host, port, control_id=NOTICE.control_id, timeout_s=5, tls=tls.context())
    assert rogue.messages == []


# ---------------------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("env", "match"),
    [
        (
            {"TLS_CERT": "{tmp}/missing.crt", "TLS_KEY": "{key}", "TLS_CA": "{ca}"},
            r"setting VIGIL_DICOM_TLS_CERT: .*cannot be read: .*missing\.crt \(FileNotFoundError\)",
        ),
        (
            {"TLS_CERT": "{cert}", "TLS_CA": "{ca}"},
            r"setting VIGIL_DICOM_TLS_KEY: .*must be set when VIGIL_DICOM_TLS_CERT",
        ),
        ({"TLS_KEY": "{key}"}, r"setting VIGIL_DICOM_TLS_KEY: .*is set but VIGIL_DICOM_TLS_CERT is not"),
        (
            {"TLS_CERT": "{cert}", "TLS_KEY": "{other_key}", "TLS_CA": "{ca}"},
            r"setting VIGIL_DICOM_TLS_KEY: .*cannot be loaded as a PEM certificate .*and its unencrypted private key",
        ),
        ({"TLS_CERT": "{cert}", "TLS_KEY": "{key}"}, r"setting VIGIL_DICOM_TLS_CA: .*must be set when TLS is on"),
        (
            {"TLS_CERT": "{cert}", "TLS_KEY": "{key}", "TLS_CA": "{key}"},
            r"setting VIGIL_DICOM_TLS_CA: .*cannot be loaded as a PEM CA bundle",
        ),
        ({"PACS_TLS": "true"}, r"setting VIGIL_DICOM_PACS_TLS: .*needs VIGIL_DICOM_TLS_CA"),
        (
            {"ALLOWED_NETWORKS": "10.0.0.0/8,10.0.0.0/33"},
            r"setting VIGIL_DICOM_ALLOWED_NETWORKS: .*entry '10.0.0.0/33' is not an IP address or CIDR network",
        ),
        ({"ALLOWED_NETWORKS": "hospital.example"}, r"VIGIL_DICOM_ALLOWED_NETWORKS: .*'hospital.example' is not an IP"),
        ({"ALLOWED_NETWORKS": "10.0.0.5/24"}, r"VIGIL_DICOM_ALLOWED_NETWORKS: .*host bits set: write 10.0.0.0/24"),
    ],
    ids=[
        "missing-cert",
        "cert-without-key",
        "key-without-cert",
        "key-not-the-certificate's",
        "no-ca",
        "ca-not-a-bundle",
        "pacs-tls-without-ca",
        "bad-prefix",
        "host-name",
        "host-bits",
    ],
)
def test_bad_tls_and_network_settings_are_errors_naming_the_setting(monkeypatch, tmp_path, pki, env, match):
    paths = {"tmp": tmp_path, "cert": pki.node.cert, "key": pki.node.key, "other_key": pki.modality.key, "ca": pki.ca}
    for name in [n for n in os.environ if n.startswith("VIGIL_DICOM_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"VIGIL_DICOM_{name}", value.format(**paths))
    with pytest.raises(ConfigError, match=match) as raised:
        load_dicom_settings(work_dir=tmp_path)
    assert "Traceback" not in str(raised.value)


def test_tls_is_off_and_any_address_allowed_by_default_and_said_so_at_start(scp, caplog):
    caplog.set_level(logging.INFO, logger="serving.dicom_node")
    node, _ = scp(tls=False)
    assert not node.settings.tls_enabled and node.settings.networks() == ()
    assert "admits connections from any address (VIGIL_DICOM_ALLOWED_NETWORKS is empty)" in caplog.text
    assert "plain TCP" in caplog.text


# ---------------------------------------------------------------------------------------------- dcmtk
@pytest.fixture(scope="session")
def storescu() -> str:
    """dcmtk's storescu, installed with apt-get when this runs as root (as CI does); else the test is skipped."""
    return tool_or_skip("storescu", "dcmtk", "the TLS test with a third-party sender")


def test_dcmtk_storescu_over_tls_with_a_client_certificate_is_stored_and_without_tls_refused(
    scp, pki, storescu, tmp_path
):
    node, intake = scp(allowed_networks="127.0.0.1")
    ds = _radiograph()
    path = tmp_path / "cr.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    common = ["-aet", "MODALITY", "-aec", "VIGIL", "-to", "5", "-ta", "5", "-td", "5"]
    tls = subprocess.run(
        [
            storescu,
            "+tls",
            str(pki.modality.key),
            str(pki.modality.cert),
            "+cf",
            str(pki.ca),
            *common,
            "127.0.0.1",
            str(node.port),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert tls.returncode == 0, tls.stderr[-2000:]
    assert intake.queue.get(ds.SOPInstanceUID) is not None
    again = _radiograph()
    dcmwrite(path, again, enforce_file_format=True)
    plain = subprocess.run(
        [storescu, *common, "127.0.0.1", str(node.port), str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode != 0
    assert intake.queue.get(again.SOPInstanceUID) is None
