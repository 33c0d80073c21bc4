"""The DICOM node's bounds and the node-wide counters that enforce them (issue 14, findings 3 and 6).

:class:`NodeLimits` holds the bounds (from :class:`serving.dicom_node.settings.DicomNodeSettings`);
:class:`ConnectionGuard` counts, for the whole node, the open TCP connections (in all and per address, checked
against the network allow-list first), the association slots taken by allowed requests, and the instances being
received at once. Its refusals are logged at WARNING at most once per ten seconds per kind, with the count since,
naming the peer address and the limit, never the bytes received. The pynetdicom pieces that consult it are in
:mod:`serving.dicom_node.guard`, :mod:`serving.dicom_node.bounded_dul` and :mod:`serving.dicom_node.spool`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pynetdicom.association import Association

from serving.dicom_node.tls import IPNetwork, address_allowed

__all__ = ["ConnectionGuard", "NodeLimits", "release_store_slot"]

log = logging.getLogger(__name__)

_SPOOL_DIR: Final = ".spool"
_DIR_MODE: Final = 0o700
_WARN_EVERY_S: Final = 10.0


@dataclass(frozen=True)
class NodeLimits:
    """The bounds the guarded server enforces (from :class:`serving.dicom_node.settings.DicomNodeSettings`)."""

    max_pdu_bytes: int
    max_instance_bytes: int
    pre_association_timeout_s: float
    network_timeout_s: float
    max_associations: int
    max_connections: int
    max_connections_per_address: int
    max_concurrent_stores: int
    spool_dir: Path
    allowed_networks: tuple[IPNetwork, ...] = ()  # empty: any address

    @classmethod
    def from_settings(cls, cfg: Any) -> NodeLimits:
        return cls(
            max_pdu_bytes=cfg.max_pdu_bytes,
            max_instance_bytes=cfg.max_instance_bytes,
            pre_association_timeout_s=cfg.pre_association_timeout_s,
            network_timeout_s=cfg.network_timeout_s,
            max_associations=cfg.max_associations,
            max_connections=cfg.max_connections,
            max_connections_per_address=cfg.max_connections_per_address,
            max_concurrent_stores=cfg.max_concurrent_stores,
            spool_dir=cfg.resolved_storage_dir() / _SPOOL_DIR,
            allowed_networks=cfg.networks(),
        )


class _Throttled:
    """WARNING logs at most once per :data:`_WARN_EVERY_S` per kind: a flood of refusals must not flood the log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -_WARN_EVERY_S) < _WARN_EVERY_S:
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += f" ({suppressed} more of these since the last such message)"
        log.warning(message, *args)


class ConnectionGuard:
    """The node-wide counters: open connections (in all and per address), association slots, receiving C-STOREs."""

    def __init__(self, limits: NodeLimits) -> None:
        self.limits = limits
        self.throttled = _Throttled()
        self._lock = threading.Lock()
        self._per_address: Counter[str] = Counter()
        self._open = 0
        self._associations: set[int] = set()
        self._stores = threading.BoundedSemaphore(limits.max_concurrent_stores)
        self._store_holders: set[int] = set()
        self._waiting = 0
        private = limits.spool_dir
        private.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(private, _DIR_MODE)

    # ------------------------------------------------------------------------------------ connections
    def admit_address(self, address: str) -> bool:
        """Whether ``address`` is in the network allow-list (always, when the list is empty)."""
        networks = self.limits.allowed_networks
        if not networks or address_allowed(address, networks):
            return True
        self.throttled.warning(
            "address",
            "DICOM connection from %s refused at accept: address not in VIGIL_DICOM_ALLOWED_NETWORKS",
            address,
        )
        return False

    def admit_connection(self, address: str) -> bool:
        """Count a new TCP connection from ``address``; False (not counted) when a connection cap is reached."""
        with self._lock:
            if self._open >= self.limits.max_connections:
                reason = f"{self.limits.max_connections} connections already open (VIGIL_DICOM_MAX_CONNECTIONS)"
            elif self._per_address[address] >= self.limits.max_connections_per_address:
                reason = (
                    f"{self.limits.max_connections_per_address} connections already open from this address "
                    "(VIGIL_DICOM_MAX_CONNECTIONS_PER_ADDRESS)"
                )
            else:
                self._open += 1
                self._per_address[address] += 1
                return True
        self.throttled.warning("connection", "DICOM connection from %s refused at accept: %s", address, reason)
        return False

    def release_connection(self, address: str) -> None:
        with self._lock:
            self._open -= 1
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return self._open

    # ------------------------------------------------------------------------------------ association slots
    def claim_association(self, assoc: Association) -> bool:
        """Take an association slot for an allowed request; False when all ``max_associations`` are taken."""
        with self._lock:
            if len(self._associations) >= self.limits.max_associations:
                return False
            self._associations.add(id(assoc))
            return True

    def release_association(self, assoc: Association) -> None:
        with self._lock:
            self._associations.discard(id(assoc))

    # ------------------------------------------------------------------------------------ receiving C-STOREs
    def acquire_store(self, assoc: Association, wait_s: float, keep_alive: Any) -> bool:
        """Take one of the ``max_concurrent_stores`` receive slots for ``assoc`` (idempotent), waiting up to
        ``wait_s``; ``keep_alive`` is called about once a second while waiting (the DUL's idle timer)."""
        with self._lock:
            if id(assoc) in self._store_holders:
                return True
        if self._stores.acquire(blocking=False):
            with self._lock:
                self._store_holders.add(id(assoc))
            return True
        deadline = time.monotonic() + wait_s
        with self._lock:
            self._waiting += 1
        try:
            while True:
                if self._stores.acquire(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                    with self._lock:
                        self._store_holders.add(id(assoc))
                    return True
                if time.monotonic() >= deadline:
                    return False
                keep_alive()
        finally:
            with self._lock:
                self._waiting -= 1

    @property
    def stores_waiting(self) -> int:
        """Instances held back (their senders' TCP stalled) until a receive slot is free."""
        with self._lock:
            return self._waiting

    def release_store(self, assoc: Association) -> None:
        with self._lock:
            if id(assoc) not in self._store_holders:
                return
            self._store_holders.discard(id(assoc))
        self._stores.release()


def release_store_slot(assoc: Association) -> None:
    """Free ``assoc``'s receive slot once its C-STORE has been handled (no-op for an unguarded association)."""
    guard = getattr(assoc, "guard", None)
    if isinstance(guard, ConnectionGuard):
        guard.release_store(assoc)
