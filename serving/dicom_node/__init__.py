"""Vigil as a DICOM node: a Storage SCP, a durable work queue, second-read workers and SR delivery.

Modules: :mod:`.settings` (``VIGIL_DICOM_*``), :mod:`.records` (queue items and their state machine),
:mod:`.queue` / :mod:`.queue_redis` (SQLite and Redis back-ends), :mod:`.intake` (durable write + queue, shared
with STOW-RS), :mod:`.scp` (pynetdicom Storage SCP), :mod:`.analysis` (second read, audit, SR, heat-map SC),
:mod:`.delivery` (C-STORE to the destination), :mod:`.worker` (threads, retries) and :mod:`.node` (all of it).
"""
