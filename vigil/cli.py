"""The ``vigil`` command line. It only parses arguments and delegates to the packages.

Errors from bad input (config, CSV, model files) are printed as one clear line naming the field and exit
with status 2; they never end in a traceback.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from models.errors import RecordValidationErrors, VigilError
from workflows.logs import configure_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Vigil: triage and chest X-ray decision support (never replaces a clinician).",
)
log = logging.getLogger("vigil")


def _fail(exc: Exception) -> None:
    if isinstance(exc, RecordValidationErrors):
        typer.echo(f"error: {len(exc.errors)} validation error(s):", err=True)
        for err in exc.errors[:50]:
            typer.echo(f"  - {err}", err=True)
    else:
        typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="Triage training config (YAML).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default $VIGIL_DATA_DIR or ../shared/data).")
    ] = None,
    imaging_config: Annotated[Path | None, typer.Option(help="Chest X-ray training config (YAML).")] = None,
    only: Annotated[str | None, typer.Option(help="Run only 'triage' or only 'imaging'.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override both configs' epochs.")] = None,
    skip_release: Annotated[bool, typer.Option(help="Register @candidate only; do not run the release gate.")] = False,
    verbose: bool = False,
) -> None:
    """The main job: train the triage and chest X-ray models, track them in MLflow, export to ONNX (parity
    checked), evaluate against baselines, register each as @candidate, then run the release gate (fairness
    audit, floors, artefact checks), which alone moves @production.

    `make run` then starts `vigil serve` on the released models.
    """
    configure_logging(verbose)
    from workflows.job import run_job

    try:
        run_job(
            config=config,
            imaging_config=imaging_config,
            data_dir=data_dir,
            only=only,
            epochs=epochs,
            skip_release=skip_release,
            echo=typer.echo,
        )
    except VigilError as exc:
        _fail(exc)
        return
    typer.echo(
        "Only a model that passed the release gate is ever at @production; `vigil serve` serves those "
        "(see README: Serving)."
    )


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="An .onnx file, or a registry URI such as models:/vigil-triage@candidate")],
    data: Annotated[str, typer.Option(help="Dataset: nhamcs:2020, ktas, csv:<path>, synthetic:n=2000,seed=0")],
    out: Annotated[Path, typer.Option(help="Output folder for JSON, Markdown and plots")] = Path("vigil-work/eval"),
    baseline_train: Annotated[
        str | None,
        typer.Option(
            help="Dataset to fit the logistic/GBM/NEWS2 baselines on (default: none for csv, else nhamcs:2018,2019)"
        ),
    ] = "auto",
    data_dir: Annotated[Path | None, typer.Option(help="Data folder for named datasets")] = None,
    bootstrap: Annotated[int, typer.Option(min=10, max=100000, help="Bootstrap resamples")] = 1000,
    seed: int = 0,
    verbose: bool = False,
) -> None:
    """Evaluate a triage model on a dataset (including a site's own canonical CSV) with baselines, or a chest X-ray
    model on the held-out patients of NIH or Kermany."""
    configure_logging(verbose)
    from workflows.evaluate import evaluate_model

    try:
        done = evaluate_model(
            model, data, out, baseline_train=baseline_train, data_dir=data_dir, bootstrap=bootstrap, seed=seed
        )
    except VigilError as exc:
        _fail(exc)
        return
    for line in done.lines:
        typer.echo(line)
    typer.echo(json.dumps({"written": [str(p) for p in done.paths], **done.extra}))


@app.command("release")
def release_command(
    model: Annotated[str, typer.Argument(help="NAME/VERSION or NAME@ALIAS, e.g. vigil-triage/3")],
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding the evaluation data")] = None,
    policy: Annotated[Path | None, typer.Option(help="Release policy (default fairness/release_policy.yaml)")] = None,
    bootstrap: Annotated[int, typer.Option(min=100, max=100000, help="Bootstrap resamples of the audit")] = 1000,
    verbose: bool = False,
) -> None:
    """Release gate: artefact checks, performance floors and the fairness audit; moves @production only on pass.

    Exits 0 when the model was released, 1 when a check failed or evidence was insufficient (the reasons are
    printed and recorded on the model version), 2 for bad input.
    """
    configure_logging(verbose)
    from workflows.release import POLICY_PATH, release

    try:
        outcome = release(model, data_dir=data_dir, policy_path=policy or POLICY_PATH, n_boot=bootstrap)
    except VigilError as exc:
        _fail(exc)
        return
    for check in outcome.checks:
        typer.echo(f"[{check.status}] {check.name}: {check.reason}")
    typer.echo(f"reports: {outcome.reports[-1].parent}")
    if outcome.promoted:
        typer.echo(f"RELEASED: {outcome.model} version {outcome.version} is now @production")
        return
    typer.echo(f"NOT RELEASED: {outcome.model} version {outcome.version}: {outcome.status}", err=True)
    raise typer.Exit(code=1)


@app.command("safety")
def safety_command(
    model: Annotated[
        str, typer.Option(help="An .onnx file, or a registry reference: NAME/VERSION, NAME@ALIAS or models:/NAME@ALIAS")
    ],
    out: Annotated[Path, typer.Option(help="Folder for safety_invariants.json and .md")] = Path("vigil-work/safety"),
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding the films (imaging models)")] = None,
    n_grid: Annotated[int, typer.Option(min=100, max=10_000_000, help="Perturbed triage records")] = 10_000,
    seed: int = 0,
    verbose: bool = False,
) -> None:
    """Run the safety-invariant suite on a triage or chest X-ray model (docs/clinical_safety.md).

    Prints each invariant's result and writes JSON and Markdown. Exits 0 when every invariant holds, 1 on any
    violation, 2 for bad input.
    """
    configure_logging(verbose)
    from workflows.safety import model_safety

    try:
        report, paths = model_safety(model, out, data_dir, n_grid=n_grid, seed=seed)
    except VigilError as exc:
        _fail(exc)
        return
    for result in report.results:
        typer.echo(
            f"[{'pass' if result.passed else 'FAIL'}] {result.id}: {result.n_violations}/{result.n_cases} "
            f"violations (tolerance: {result.tolerance})"
        )
    typer.echo(f"{report.model_name} {report.model_version}: {'PASS' if report.passed else 'FAIL'}: {report.summary()}")
    typer.echo(json.dumps({"written": [str(p) for p in paths]}))
    if not report.passed:
        raise typer.Exit(code=1)


@app.command("second-read")
def second_read(
    model: Annotated[str, typer.Option(help="An .onnx file, or models:/vigil-cxr@candidate")],
    dicom: Annotated[Path, typer.Option(help="A DICOM instance (CR/DX chest radiograph)")],
    out: Annotated[Path, typer.Option(help="Folder for the SR (.dcm), the heat map (.png) and the JSON")] = Path(
        "vigil-work/second-read"
    ),
) -> None:
    """Second read of one DICOM: per-finding probabilities and flags, a heat map PNG and a TID 1500 SR."""
    configure_logging(False)
    from workflows.second_read import second_read_file

    try:
        summary = second_read_file(model, dicom, out)
    except (VigilError, ValueError) as exc:
        _fail(exc)
        return
    typer.echo(json.dumps(summary, indent=2))


@app.command("bench-imaging")
def bench_imaging(
    run_dir: Annotated[Path, typer.Option(help="A run folder holding cxr_fp32.onnx (and cxr_int8.onnx)")],
    data_dir: Annotated[Path | None, typer.Option(help="Data folder holding imaging/dicom_fixtures")] = None,
    repeats: Annotated[int, typer.Option(min=3, max=10000)] = 50,
    threads: Annotated[int, typer.Option(min=1, max=64)] = 2,
    out: Annotated[Path, typer.Option(help="Markdown report")] = Path("docs/imaging_latency.md"),
) -> None:
    """Benchmark: DICOM bytes -> flags against raw onnxruntime inference on every chest fixture."""
    configure_logging(False)
    from workflows.bench import bench_imaging as run_bench

    try:
        written = run_bench(run_dir, data_dir, repeats=repeats, threads=threads, out=out)
    except VigilError as exc:
        _fail(exc)
        return
    typer.echo(f"wrote {written}")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes; threads are split between them")] = 1,
    allow_unreleased: Annotated[
        bool,
        typer.Option(
            "--allow-unreleased",
            help="Serve models without a passing release gate (logged; flagged in every "
            "response; evaluation only, never for patients)",
        ),
    ] = False,
    triage_model: Annotated[str | None, typer.Option(help="Registry ref (default vigil-triage@production)")] = None,
    imaging_model: Annotated[str | None, typer.Option(help="Registry ref (default vigil-cxr@production)")] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Serve the ONNX files of this folder instead of the registry")
    ] = None,
) -> None:
    """Start the HTTP API (OpenAPI at /docs) on the released models; settings also come from VIGIL_* variables."""
    from serving.settings import load_settings
    from serving.store.audit_chain import open_anchor
    from workflows.serve import serve

    env = {}
    if allow_unreleased:
        env["VIGIL_ALLOW_UNRELEASED"] = "true"
    if triage_model:
        env["VIGIL_TRIAGE_MODEL"] = triage_model
    if imaging_model:
        env["VIGIL_IMAGING_MODEL"] = imaging_model
    if model_dir:
        env.update({"VIGIL_MODEL_SOURCE": "local", "VIGIL_MODEL_DIR": str(model_dir.resolve())})
    try:
        import os

        os.environ.update(env)  # the worker processes read their settings from the environment
        settings = load_settings()  # a bad setting fails here, once, with its name
        open_anchor()  # and so does a bad VIGIL_AUDIT_ANCHOR_* setting
        if settings.dicom_node and workers > 1:
            raise VigilError(
                "VIGIL_DICOM_NODE=true needs --workers 1 (one Storage SCP per port); run "
                "`vigil dicom-node` beside a multi-worker `vigil serve` instead"
            )
    except VigilError as exc:
        _fail(exc)
        return
    serve(host=host, port=port, workers=workers)


@app.command("dicom-node")
def dicom_node_command() -> None:
    """Run the DICOM node: Storage SCP (C-STORE, C-ECHO) for the AE titles in VIGIL_DICOM_ALLOWED_CALLING_AETS,
    second reads of CR/DX chest images, TID 1500 SRs sent by C-STORE to VIGIL_DICOM_DESTINATION."""
    from workflows.serve import run_dicom_node

    try:
        run_dicom_node()
    except VigilError as exc:
        _fail(exc)


@app.command("openapi")
def openapi_command(
    out: Annotated[Path, typer.Option(help="Where to write the OpenAPI description")] = Path("docs/openapi.json"),
) -> None:
    """Write the service's OpenAPI description (the same document the service serves at /openapi.json)."""
    from serving.api.app import openapi_document

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    typer.echo(f"wrote {out}")


dicom_queue_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The DICOM node's queue: results whose delivery or worklist notification failed, and sending them again.",
)
app.add_typer(dicom_queue_app, name="dicom-queue")


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
        _fail(exc)
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
        _fail(exc)
        return
    for uid in uids:
        if uid not in missing:
            typer.echo(f"{done}: {uid}")
    if missing:
        _fail(VigilError(f"{not_failed} (unknown, or not failed): {', '.join(u[:64] for u in missing)}"))


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
app.add_typer(keys_app, name="keys")


def _store() -> Any:
    from serving.settings import load_settings
    from serving.store.database import Store

    store = Store(load_settings().store_url())
    store.create_schema()
    return store


@keys_app.command("create")
def keys_create(
    client: Annotated[str, typer.Option(help="Who holds the key (a system's name, not a person's data)")],
    scope: Annotated[list[str], typer.Option(help="triage, imaging or admin; repeat for several")],
) -> None:
    """Create a key; it is printed once and only its hash is stored."""
    try:
        info, key = _store().create_key(client, scope)
    except VigilError as exc:
        _fail(exc)
        return
    typer.echo(json.dumps({"key_id": info.key_id, "client": info.client, "scopes": list(info.scopes)}))
    typer.echo(f"API key (shown once; store it securely): {key}")


@keys_app.command("list")
def keys_list() -> None:
    """List keys: id, client, scopes, created, revoked (never the key)."""
    try:
        keys = _store().list_keys()
    except VigilError as exc:
        _fail(exc)
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
        _fail(exc)
        return
    if not done:
        _fail(VigilError(f"no active key with id {key_id[:32]!r}"))
    typer.echo(f"revoked {key_id}")


audit_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The audit trail: check its hash chain against the keyed anchors (docs/audit.md).",
)
app.add_typer(audit_app, name="audit")
_ANCHOR_PATH_HELP = "Anchor file to check (default $VIGIL_AUDIT_ANCHOR_PATH), e.g. a copy fetched from WORM storage"
_ANCHOR_KEY_HELP = "File holding the anchor key (default $VIGIL_AUDIT_ANCHOR_KEY or $VIGIL_AUDIT_ANCHOR_KEY_FILE)"


def _audit_target(anchor_path: Path | None, anchor_key_file: Path | None) -> tuple[Any, Any]:
    """The configured store (not created: a check must not write) and anchor, the options overriding settings."""
    from serving.settings import load_settings
    from serving.store.audit_chain import load_anchor_settings, open_anchor
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
        _fail(exc)
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
        _fail(exc)
        return
    _audit_report(report)


def main() -> None:
    """Entry point of the ``vigil`` console script."""
    app()


if __name__ == "__main__":
    main()
