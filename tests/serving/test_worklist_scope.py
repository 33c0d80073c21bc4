"""Issue 14 finding 16 (rest): the imaging worklist shows a key its own client's instances only, unless the key has
the admin scope.

An instance's client is the client of the key that sent it by STOW-RS (the queue keeps the key id as its calling
AE), or, for a C-STORE, the client that ``VIGIL_WORKLIST_AETS`` gives its calling AE title.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from models.errors import ConfigError
from serving.dicom_node.queue import WorkQueue, open_queue
from serving.dicom_node.records import ANALYSE, NewInstance
from serving.settings import load_settings

CR = "1.2.840.10008.5.1.4.1.1.1"
STOW_SOURCE, C_STORE_SOURCE = "dicomweb:stow-rs", "dicom:c-store"  # the queue's sources (routes_dicomweb, scp)
REDIS_URL = os.environ.get("VIGIL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _flagged(queue: WorkQueue, uid: str, source: str, calling_aet: str) -> None:
    """Queue an instance and record its second read as flagging an effusion (as a worker would)."""
    queue.enqueue(
        NewInstance(
            sop_instance_uid=uid,
            sop_class_uid=CR,
            study_instance_uid="1.2.9",
            series_instance_uid=None,
            transfer_syntax=None,
            calling_aet=calling_aet,
            source=source,
            file_path=None,
            sha256="a" * 64,
            size_bytes=1,
        )
    )
    item = queue.claim(ANALYSE, "test-worker", 60)
    assert item is not None and item.sop_instance_uid == uid
    queue.transition(
        item,
        expect_state="analysing",
        state="analysed",
        flagged=True,
        flagged_findings=("effusion",),
        analysed_at=time.time(),
    )


@pytest.fixture
def worklist(service_factory, tmp_path, model_folder):
    """A service whose queue holds instances of two clients, an unmapped modality and a spoofing one."""
    with service_factory(tmp_path, model_folder, worklist_aets={"radiology-a": ["CR_ROOM_1"]}) as svc:
        keys = {}
        for name, client, scopes in (
            ("a1", "radiology-a", ["imaging"]),
            ("a2", "radiology-a", ["imaging"]),
            ("b", "radiology-b", ["imaging"]),
            ("c", "radiology-c", ["imaging"]),
            ("ops", "operations", ["imaging", "admin"]),
        ):
            info, key = svc.store.create_key(client, scopes)
            keys[name] = (info, key)
        queue = svc.client.app.state.vigil.dicom_intake().queue
        sent = {
            "1.1": (STOW_SOURCE, keys["a1"][0].key_id),
            "1.2": (STOW_SOURCE, keys["a2"][0].key_id),
            "1.3": (STOW_SOURCE, keys["b"][0].key_id),
            "1.4": (C_STORE_SOURCE, "CR_ROOM_1"),
            "1.5": (C_STORE_SOURCE, "OTHER_ROOM"),
            # A modality calling itself by A's key id is not A: the source is part of the origin.
            "1.6": (C_STORE_SOURCE, keys["a1"][0].key_id),
        }
        for uid, (source, aet) in sent.items():
            _flagged(queue, uid, source, aet)
        svc.store.revoke_key(keys["a2"][0].key_id)  # what a revoked key sent stays its client's
        yield svc, {name: key for name, (_, key) in keys.items()}


def _seen(svc, key: str, query: str = "") -> set[str]:
    res = svc.client.get(f"/v1/imaging/flags{query}", headers={"Authorization": f"Bearer {key}"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["n"] == len(body["items"])
    return {item["sop_instance_uid"] for item in body["items"]}


def test_a_key_sees_only_its_own_clients_instances(worklist):
    svc, keys = worklist
    assert _seen(svc, keys["a1"]) == {"1.1", "1.2", "1.4"}
    assert _seen(svc, keys["b"]) == {"1.3"}
    assert _seen(svc, keys["c"]) == set()
    assert _seen(svc, keys["b"], "?finding=effusion&status=analysed") == {"1.3"}


def test_a_key_with_the_admin_scope_sees_every_instance(worklist):
    svc, keys = worklist
    assert _seen(svc, keys["ops"]) == {"1.1", "1.2", "1.3", "1.4", "1.5", "1.6"}


def test_the_limit_counts_the_clients_own_instances_only(worklist):
    svc, keys = worklist
    assert len(_seen(svc, keys["a1"], "?limit=2")) == 2
    assert _seen(svc, keys["b"], "?limit=1") == {"1.3"}  # the newer instances of others do not use up the limit


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_the_queue_filters_on_source_and_calling_aet_together(backend, tmp_path):
    if backend == "sqlite":
        queue = open_queue(f"sqlite:///{tmp_path / 'q.db'}")
    else:
        redis = pytest.importorskip("redis")
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            pytest.skip(f"Redis is not reachable at {REDIS_URL}: {type(exc).__name__}")
        prefix = f"vigil-test:{uuid.uuid4().hex[:12]}:"
        queue = open_queue(REDIS_URL, redis_prefix=prefix)
    try:
        _flagged(queue, "2.1", STOW_SOURCE, "KEYID000001")
        _flagged(queue, "2.2", C_STORE_SOURCE, "KEYID000001")
        _flagged(queue, "2.3", C_STORE_SOURCE, "ROOM")

        def uids(callers):
            return {i.sop_instance_uid for i in queue.list_items(flagged_only=True, callers=callers)}

        assert uids(None) == {"2.1", "2.2", "2.3"}
        assert uids([(STOW_SOURCE, "KEYID000001")]) == {"2.1"}
        assert uids([(C_STORE_SOURCE, "ROOM"), (STOW_SOURCE, "KEYID000001")]) == {"2.1", "2.3"}
        assert uids([]) == set()
    finally:
        if backend == "redis":
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
            client.close()
        queue.close()


def test_worklist_aets_is_read_from_the_environment_and_checked(monkeypatch):
    monkeypatch.setenv("VIGIL_WORKLIST_AETS", '{"radiology-a": [" CR_ROOM_1 ", "DX2"]}')
    assert load_settings().worklist_aets == {"radiology-a": ["CR_ROOM_1", "DX2"]}
    monkeypatch.setenv("VIGIL_WORKLIST_AETS", '{"radiology-a": ["AN_AE_TITLE_OF_17"]}')
    with pytest.raises(ConfigError, match=r"VIGIL_WORKLIST_AETS.*1 to 16"):
        load_settings()
