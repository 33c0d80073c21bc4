"""The admin commands of ``vigil``, on the service's own stores: ``dicom-queue`` (the DICOM node's failed
deliveries and notifications), ``keys`` (API keys) and ``audit`` (the audit trail's hash chain and anchors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from models.errors import VigilError
from vigil.output import fail

dicom_queue_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The DICOM node's queue: results whose delivery or worklist notification failed, and sending them again.",
)


def _dicom_queue() -> Any:
    from serving.dicom_node.queue import open_queue
    from serving.dicom_node.settings import load_dicom_settings

    settings = load_dicom_settings()
    return open_queue(settings.resolved_queue_url(), redis_prefix=settings.queue_prefix)


@dicom_queue_app.command("failed")
def dicom_queue_failed(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many of each, newest first")] = 100,
) -> None:
    """List the instances whose results could not be delivered, and the flagged ones whose worklist notification
    could not be sent, after VIGIL_DICOM_MAX_ATTEMPTS (one JSON line each: what failed, UIDs, attempts, the last
    error; nothing from the patient module). Re-send with `redeliver` or `renotify`."""
    try:
        queue = _dicom_queue()
        undelivered = queue.list_items(status="delivery_failed", limit=limit)
        unnotified = queue.list_items(notification="failed", limit=limit)
    except VigilError as exc:
        fail(exc)
        return
    for item in undelivered:
        view = item.public()
        typer.echo(
            json.dumps(
                {
                    "failed": "delivery",
                    **{
                        k: view[k]
                        for k in (
                            "sop_instance_uid",
                            "study_instance_uid",
                            "delivery_attempts",
                            "last_error",
                            "structured_report",
                        )
                    },
                }
            )
        )
    for item in unnotified:
        view = item.public()
        typer.echo(
            json.dumps(
                {
                    "failed": "worklist notification",
                    **{
                        k: view[k]
                        for k in ("sop_instance_uid", "study_instance_uid", "flagged_findings", "worklist_notification")
                    },
                }
            )
        )


def _requeue(uids: list[str], method: str, done: str, not_failed: str) -> None:
    """Call the queue's ``method`` (requeue_delivery or requeue_notify) for each UID; echo ``done: UID`` for each
    requeued, exit 2 naming those that were not (``not_failed``)."""
    try:
        queue = _dicom_queue()
        missing = [uid for uid in uids if getattr(queue, method)(uid) is None]
    except VigilError as exc:
        fail(exc)
        return
    for uid in uids:
        if uid not in missing:
            typer.echo(f"{done}: {uid}")
    if missing:
        fail(VigilError(f"{not_failed} (unknown, or not failed): {', '.join(u[:64] for u in missing)}"))


_FAILED_UIDS = typer.Argument(help="SOP Instance UIDs (from `vigil dicom-queue failed`)")


@dicom_queue_app.command("redeliver")
def dicom_queue_redeliver(sop_instance_uid: Annotated[list[str], _FAILED_UIDS]) -> None:
    """Send the results of these delivery_failed instances again (the same SR and heat map, attempts from zero);
    a running node delivers them on its next poll. Exit status 2 if one of them is not in delivery_failed."""
    _requeue(sop_instance_uid, "requeue_delivery", "queued for delivery", "not in delivery_failed")


@dicom_queue_app.command("renotify")
def dicom_queue_renotify(sop_instance_uid: Annotated[list[str], _FAILED_UIDS]) -> None:
    """Send the worklist notification of these flagged instances again (to the channels that never acknowledged it,
    attempts from zero); a running node sends it on its next poll. Exit status 2 if one of them has no failed
    notification."""
    _requeue(sop_instance_uid, "requeue_notify", "queued for notification", "no failed worklist notification")


keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys of the service (stored hashed).")


def _store() -> Any:
    from serving.settings import load_settings
    from serving.store.database import Store

    store = Store(load_settings().store_url())
    store.create_schema()
    return store


@keys_app.command("create")
def keys_create(
    client: Annotated[str, typer.Option(help="Who holds the key (a system's name, not a person's data)")],
    scope: Annotated[list[str], typer.Option(help="triage, imaging, outcomes or admin; repeat for several")],
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    try:
        info, key = _store().create_key(client, scope)
    except VigilError as exc:
        fail(exc)
        return
    typer.echo(json.dumps({"key_id": info.key_id, "client": info.client, "scopes": list(info.scopes)}))
    typer.echo(f"API key (shown once; store it securely): {key}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys: id, client, scopes, created, revoked (never the key)."""
    try:
        keys = _store().list_keys()
    except VigilError as exc:
        fail(exc)
        return
    for info in keys:
        typer.echo(
            json.dumps(
                {
                    "key_id": info.key_id,
                    "client": info.client,
                    "scopes": list(info.scopes),
                    "created_utc": info.created_utc,
                    "revoked_utc": info.revoked_utc,
                }
            )
        )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from `vigil keys list`)")]) -> None:
    """Revoke a key; requests with it are refused (401) from now on."""
    try:
        done = _store().revoke_key(key_id)
    except VigilError as exc:
        fail(exc)
        return
    if not done:
        fail(VigilError(f"no active key with id {key_id[:32]!r}"))
    typer.echo(f"revoked {key_id}")


audit_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The audit trail: check its hash chain against the keyed anchors (docs/audit.md).",
)
_ANCHOR_PATH_HELP = "Anchor file to check (default $VIGIL_AUDIT_ANCHOR_PATH), e.g. a copy fetched from WORM storage"
_ANCHOR_KEY_HELP = "File holding the anchor key (default $VIGIL_AUDIT_ANCHOR_KEY or $VIGIL_AUDIT_ANCHOR_KEY_FILE)"


def _audit_target(anchor_path: Path | None, anchor_key_file: Path | None) -> tuple[Any, Any]:
    """The configured store (not created: a check must not write) and anchor, the options overriding settings."""
    from serving.settings import load_settings
    from serving.store.audit_anchor import load_anchor_settings, open_anchor
    from serving.store.database import Store

    overrides: dict[str, object] = {}
    if anchor_path is not None:
        overrides["path"] = anchor_path
    if anchor_key_file is not None:
        overrides.update(key_file=anchor_key_file, key=None)
    anchor = open_anchor(load_anchor_settings(**overrides))
    return Store(load_settings().store_url()), anchor


def _audit_report(report: Any) -> None:
    typer.echo(json.dumps(report.as_dict()))
    if not report.ok:
        typer.echo(report.summary(), err=True)
        raise typer.Exit(code=1)
    typer.echo(report.summary())


@audit_app.command("verify")
def audit_verify(
    anchor_path: Annotated[Path | None, typer.Option(help=_ANCHOR_PATH_HELP)] = None,
    anchor_key_file: Annotated[Path | None, typer.Option(help=_ANCHOR_KEY_HELP)] = None,
) -> None:
    """Walk the audit chain of the configured store ($VIGIL_AUDIT_URL) and check it against every anchor.

    Prints the first broken seq and why, never a row's content. Exits 0 when intact, 1 on any break (a changed,
    missing or re-chained row, deleted newest rows, a forged anchor), 2 for a bad setting or an unreachable store.
    """
    from serving.store.audit_chain import verify_audit

    try:
        store, anchor = _audit_target(anchor_path, anchor_key_file)
        try:
            report = verify_audit(store, anchor)
        finally:
            store.dispose()
    except VigilError as exc:
        fail(exc)
        return
    _audit_report(report)


@audit_app.command("anchor")
def audit_anchor(
    anchor_path: Annotated[Path | None, typer.Option(help=_ANCHOR_PATH_HELP)] = None,
    anchor_key_file: Annotated[Path | None, typer.Option(help=_ANCHOR_KEY_HELP)] = None,
) -> None:
    """Verify the chain, then anchor its head: once, when turning anchoring on over an existing trail.

    Exits 0 when the chain verified (and its head is now anchored), 1 on any break (nothing is anchored), 2 for
    a bad setting, an unreachable store or an anchor file that cannot be written.
    """
    from models.errors import ConfigError
    from serving.store.audit_chain import anchor_head

    try:
        store, anchor = _audit_target(anchor_path, anchor_key_file)
        try:
            if anchor is None:
                raise ConfigError(
                    "VIGIL_AUDIT_ANCHOR_PATH is not set (or pass --anchor-path): there is nowhere to anchor the chain"
                )
            report = anchor_head(store, anchor)
        finally:
            store.dispose()
    except VigilError as exc:
        fail(exc)
        return
    _audit_report(report)


def monitor_command(
    since: Annotated[str, typer.Option(help="Start of the period, ISO-8601 UTC (2026-12-07T00:00:00Z)")],
    until: Annotated[str, typer.Option(help="End of the period (excluded), ISO-8601 UTC")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the JSON report [default: $VIGIL_WORK_DIR/monitoring]")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Release policy (default: the shipped one)")] = None,
    n_boot: Annotated[int, typer.Option(min=50, max=10_000, help="Bootstrap resamples of each audit")] = 500,
    prometheus_textfile: Annotated[
        Path | None, typer.Option(help="Also write the headline gauges here (node_exporter textfile collector, .prom)")
    ] = None,
) -> None:
    """Monitor the triage predictions the service answered in a period: volume, levels, floor rates and groups per
    model version, and, where outcomes were fed back (POST /v1/outcomes), the release gate's fairness audit and
    verdict per group (AUROC, calibration, under-triage). Prints one line per audit; writes the JSON report. Exit
    status 1 when an audit breaches the release policy (each breach is also logged at WARNING), 2 on bad input."""
    from workflows.monitoring_run import monitor_period

    try:
        report, path = monitor_period(
            since, until, out, policy_path=policy, n_boot=n_boot, prometheus_textfile=prometheus_textfile
        )
    except VigilError as exc:
        fail(exc)
        return
    typer.echo(f"{report.n_predictions} triage predictions {since} .. {until} (policy {report.policy_version})")
    for version in report.versions:
        typer.echo(
            f"{version.model} v{version.version}: {version.n} predictions, {version.n_with_outcome} with outcomes"
        )
        for outcome, est in version.estimated.items():
            measured = "" if est["measured"] is None else f", measured {est['measured']:.3f} on {est['n_measured']}"
            estimate = "n/a" if est["estimated"] is None else f"{est['estimated']:.3f}"
            typer.echo(f"  {outcome} AUROC estimated from the scores {estimate}{measured}")
        for name, found in version.audits.items():
            breaches = "; ".join(found["breaches"][:3])
            typer.echo(f"  {name} (n={found['n']}): {found['gate_status']}" + (f": {breaches}" if breaches else ""))
        if not version.audits:
            typer.echo("  no outcomes fed back yet: nothing to judge per group")
    for reads in report.imaging:
        typer.echo(f"{reads.model} v{reads.version}: {reads.n} second reads, {reads.flagged} flagged")
        for finding, c in sorted(reads.findings.items()):
            positives = c["tp"] + c["fn"]
            sens = f", sensitivity {c['tp']}/{positives} against radiologists' reads" if positives else ""
            typer.echo(f"  {finding}: flagged {c['flagged']}/{c['evaluated']}{sens}")
    typer.echo(f"report: {path}")
    if report.breaches:
        typer.echo(f"{len(report.breaches)} breach(es) of the release policy: see the report", err=True)
        raise typer.Exit(code=1)
