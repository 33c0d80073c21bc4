"""The DICOM work queue in Redis (``VIGIL_DICOM_QUEUE_URL=redis://127.0.0.1:6379/0``).

Keys, all under one prefix (``vigil:dicom:`` by default):

- ``item:<SOPInstanceUID>``: a hash of the :class:`~serving.dicom_node.records.QueueItem` fields;
- ``stage:analyse`` / ``stage:deliver`` / ``stage:notify``: sorted sets of the items waiting in a stage, scored by
  when they are due (the retry time, or the end of the lease of the worker holding them); an item waits in
  ``stage:notify`` beside one of the other two;
- ``updated``: every item scored by its last change (the worklist); ``state:<state>``: a set per state (counts);
  ``leases`` / ``notify_leases``: the owner of each item's work and notification lease.

Each change is an optimistic transaction (``WATCH`` the item, read, decide in Python with the same rules as the
SQLite back-end, ``MULTI``/``EXEC``; retried when another client changed the item in between), so the item and
its indexes change together or not at all.

Durability is the Redis server's: with ``appendonly no`` (the Redis default) an acknowledged C-STORE can be lost
if the *Redis server* stops before its next snapshot. Use ``appendonly yes`` (``appendfsync everysec`` or
``always``) for a queue that keeps every instance; the queue logs a warning at start when it can see AOF is off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from models.errors import ConfigError, StoreUnavailableError
from serving.dicom_node.queue import Decide, WorkQueue
from serving.dicom_node.records import NOTIFY, STATES, QueueItem, Stage

__all__ = ["RedisQueue"]

log = logging.getLogger(__name__)

_MAX_RETRIES = 50
_PAGE = 200
_STAGES = ("analyse", "deliver", NOTIFY)


class RedisQueue(WorkQueue):
    """The queue in Redis under ``prefix``; thread-safe (a connection pool per instance)."""

    kind = "Redis"

    def __init__(self, url: str, *, prefix: str = "vigil:dicom:", timeout_s: float = 5.0) -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis is a dependency of serving
            raise ConfigError("queue_url names Redis but the redis package is not installed") from exc
        self._redis_mod = redis
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            decode_responses=True,
            health_check_interval=30,
        )
        self._url_masked = url.split("@")[-1] if "@" in url else url
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"Redis queue {self._url_masked} is unavailable: {type(exc).__name__}") from exc
        self._warn_if_volatile()

    def __repr__(self) -> str:
        return f"RedisQueue({self._url_masked!r}, prefix={self.prefix!r})"

    def _warn_if_volatile(self) -> None:
        try:
            appendonly = self._client.config_get("appendonly").get("appendonly")
        except self._redis_mod.RedisError:  # CONFIG may be renamed or forbidden: nothing to say then
            return
        if appendonly == "no":
            log.warning(
                "Redis queue %s: appendonly is off, so an instance acknowledged to a modality may be lost if "
                "the Redis server stops before its next snapshot; set 'appendonly yes'",
                self._url_masked,
            )

    # ------------------------------------------------------------------------------------ keys
    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"Redis queue {self._url_masked} is unavailable: {type(exc).__name__}")

    # The client decodes every reply (decode_responses=True), so the members, keys and values it returns are str;
    # redis-py annotates them bytes | str whatever the client, hence the casts to str below.
    @staticmethod
    def _decode(raw: Mapping[bytes | str, bytes | str]) -> QueueItem | None:
        return QueueItem.from_fields(cast(dict[str, str], raw)) if raw else None

    # ------------------------------------------------------------------------------------ primitives
    def _update(self, sop_instance_uid: str, decide: Decide) -> QueueItem | None:
        key = self._key("item", sop_instance_uid)
        redis = self._redis_mod
        try:
            with self._client.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_RETRIES):
                    try:
                        pipe.watch(key)
                        current = self._decode(pipe.hgetall(key))
                        new = decide(current)
                        if new is None:
                            pipe.unwatch()
                            return None
                        pipe.multi()
                        self._write(pipe, key, current, new)
                        pipe.execute()
                        return new
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        raise StoreUnavailableError(f"Redis queue {self._url_masked}: item kept changing under {_MAX_RETRIES} tries")

    def _write(self, pipe: Any, key: str, old: QueueItem | None, new: QueueItem) -> None:
        values = {k: ("" if v is None else str(v)) for k, v in new.to_fields().items()}
        pipe.delete(key)
        pipe.hset(key, mapping=values)
        uid = new.sop_instance_uid
        for stage in _STAGES:
            pipe.zrem(self._key("stage", stage), uid)
        waiting, due = new.stage()
        if waiting is not None:
            pipe.zadd(self._key("stage", waiting), {uid: due})
        notify_due = new.notify_due()
        if notify_due is not None:
            pipe.zadd(self._key("stage", NOTIFY), {uid: notify_due})
        pipe.zadd(self._key("updated"), {uid: new.updated_at})
        if old is not None and old.state != new.state:
            pipe.srem(self._key("state", old.state), uid)
        pipe.sadd(self._key("state", new.state), uid)
        for leases, owner in (("leases", new.lease_owner), ("notify_leases", new.notify_lease_owner)):
            if owner:
                pipe.hset(self._key(leases), uid, owner)
            else:
                pipe.hdel(self._key(leases), uid)

    def _due(self, stage: Stage, now: float, limit: int) -> list[str]:
        try:
            return list(
                cast(list[str], self._client.zrangebyscore(self._key("stage", stage), "-inf", now, start=0, num=limit))
            )
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc

    def get(self, sop_instance_uid: str) -> QueueItem | None:
        try:
            return self._decode(self._client.hgetall(self._key("item", sop_instance_uid)))
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc

    def _many(self, uids: list[str]) -> list[QueueItem]:
        with self._client.pipeline(transaction=False) as pipe:
            for uid in uids:
                pipe.hgetall(self._key("item", uid))
            return [item for raw in pipe.execute() if (item := self._decode(raw)) is not None]

    def _select(
        self,
        *,
        since: float | None,
        status: tuple[str, ...],
        finding: str | None,
        flagged_only: bool,
        limit: int,
        callers: tuple[tuple[str, str], ...] | None = None,
        notification: str | None = None,
    ) -> list[QueueItem]:
        """Walk ``updated`` newest first, filtering in Python (a queue, not an archive: purge what is done)."""
        low = "-inf" if since is None else since
        out: list[QueueItem] = []
        start = 0
        try:
            while len(out) < limit:
                page = cast(
                    list[str], self._client.zrevrangebyscore(self._key("updated"), "+inf", low, start=start, num=_PAGE)
                )
                if not page:
                    break
                start += len(page)
                for item in sorted(self._many(page), key=lambda i: (-i.updated_at, i.sop_instance_uid)):
                    if (
                        (not status or item.state in status)
                        and (finding is None or finding in item.flagged_findings)
                        and (not flagged_only or item.flagged)
                        and (notification is None or item.notify_state == notification)
                        and (callers is None or (item.source, item.calling_aet) in callers)
                    ):
                        out.append(item)
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc
        return out[:limit]

    def counts(self) -> dict[str, int]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for state in STATES:
                    pipe.scard(self._key("state", state))
                return {state: int(n) for state, n in zip(STATES, pipe.execute(), strict=True)}
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc

    def _owned(self, owner_prefix: str) -> list[str]:
        try:
            leases = [
                cast(dict[str, str], self._client.hgetall(self._key(name))) for name in ("leases", "notify_leases")
            ]
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc
        return sorted({uid for held in leases for uid, owner in held.items() if owner.startswith(owner_prefix)})

    def _terminal_before(self, before: float, states: tuple[str, ...]) -> list[str]:
        try:
            old = set(cast(list[str], self._client.zrangebyscore(self._key("updated"), "-inf", f"({before}")))
            wanted: set[str] = set()
            for state in states:
                wanted |= set(cast(set[str], self._client.smembers(self._key("state", state))))
        except self._redis_mod.RedisError as exc:
            raise self._unavailable(exc) from exc
        return sorted(old & wanted)

    def _delete(self, sop_instance_uid: str, expect_state: str) -> QueueItem | None:
        key = self._key("item", sop_instance_uid)
        redis = self._redis_mod
        try:
            with self._client.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_RETRIES):
                    try:
                        pipe.watch(key)
                        current = self._decode(pipe.hgetall(key))
                        if current is None or current.state != expect_state:
                            pipe.unwatch()
                            return None
                        pipe.multi()
                        pipe.delete(key)
                        for stage in _STAGES:
                            pipe.zrem(self._key("stage", stage), sop_instance_uid)
                        pipe.zrem(self._key("updated"), sop_instance_uid)
                        pipe.srem(self._key("state", current.state), sop_instance_uid)
                        pipe.hdel(self._key("leases"), sop_instance_uid)
                        pipe.hdel(self._key("notify_leases"), sop_instance_uid)
                        pipe.execute()
                        return current
                    except redis.WatchError:
                        continue
        except redis.RedisError as exc:
            raise self._unavailable(exc) from exc
        return None

    def close(self) -> None:
        self._client.close()
