"""Vigil as a DICOM node: a Storage SCP, a durable work queue, second-read workers and SR delivery.

Modules: :mod:`.settings` (``VIGIL_DICOM_*``) with :mod:`.addresses` (AE titles, peers, URLs), :mod:`.records`
(queue items and their state machine), :mod:`.queue` (the interface and its factory) with :mod:`.queue_sqlite` /
:mod:`.queue_redis` (SQLite and Redis back-ends), :mod:`.intake` (durable write + queue, shared with STOW-RS),
:mod:`.scp` (pynetdicom Storage SCP), :mod:`.analysis` (second read, audit, SR, heat-map SC), :mod:`.delivery`
(C-STORE to the destination), :mod:`.notify` with :mod:`.notify_hl7`, :mod:`.notify_mllp` and :mod:`.notify_fhir`
(worklist notifications), :mod:`.worker` and :mod:`.worker_notify` (threads, retries) and :mod:`.node` (all of it).
"""
