"""`vigil monitor`'s job: read the service's store for a period, monitor it (:func:`workflows.monitoring.monitor`),
write the JSON report and, optionally, the headline figures as Prometheus gauges for node_exporter's textfile
collector (alerting rules: docs/outcomes.md)."""

from __future__ import annotations

from pathlib import Path

from workflows.monitoring import MonitoringReport, monitor

__all__ = ["monitor_period", "write_prometheus_textfile"]


def monitor_period(
    since: str,
    until: str,
    out_dir: Path | None = None,
    *,
    policy_path: Path | None = None,
    n_boot: int = 500,
    prometheus_textfile: Path | None = None,
) -> tuple[MonitoringReport, Path]:
    """`vigil monitor`: read the service's store (``VIGIL_AUDIT_URL`` or the work folder's SQLite store), monitor
    ``since``..``until`` under the release policy, and write the JSON report into ``out_dir`` (default: the work
    folder's ``monitoring/``), and the gauges of :func:`write_prometheus_textfile` to ``prometheus_textfile``.

    Raises
    ------
    InputValidationError
        A time is not ISO-8601 UTC, or ``until`` is not after ``since``.
    ConfigError
        The policy or the service settings are invalid.
    StoreUnavailableError
        The store cannot be read.
    """
    import json

    from fairness.policy import load_policy
    from serving.settings import load_settings
    from serving.store.database import Store

    policy = load_policy(policy_path)
    settings = load_settings()
    out_dir = out_dir if out_dir is not None else settings.work_dir / "monitoring"
    store = Store(settings.store_url())
    try:
        report = monitor(store.read_predictions(since, until), since, until, policy, n_boot=n_boot)
    finally:
        store.dispose()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{since}_{until}".replace(":", "").replace("-", "")
    path = out_dir / f"monitoring_{stamp}.json"
    path.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False), encoding="utf-8")
    if prometheus_textfile is not None:
        write_prometheus_textfile(report, prometheus_textfile)
    return report, path


def write_prometheus_textfile(report: MonitoringReport, path: Path) -> None:
    """The report's headline figures as Prometheus gauges, written atomically to ``path`` for node_exporter's
    textfile collector (alerting rules: docs/outcomes.md): predictions, breaches per audit, and the estimated and
    measured AUROC per outcome, per model version; and the end of the period monitored."""
    from datetime import datetime

    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    version_labels = ["model", "version"]
    predictions = Gauge(
        "vigil_monitor_predictions", "Predictions answered in the period", version_labels, registry=registry
    )
    breaches = Gauge(
        "vigil_monitor_breaches",
        "Checks of the period's audit that breach the release policy",
        [*version_labels, "audit"],
        registry=registry,
    )
    auroc = Gauge(
        "vigil_monitor_auroc",
        "AUROC per outcome: estimated from the calibrated scores (kind=estimated, valid under covariate shift only) "
        "or measured on the outcomes fed back (kind=measured)",
        [*version_labels, "outcome", "kind"],
        registry=registry,
    )
    end = Gauge(
        "vigil_monitor_period_end_timestamp_seconds", "End of the period monitored (Unix time)", registry=registry
    )
    for v in report.versions:
        predictions.labels(v.model, v.version).set(v.n)
        for name, found in v.audits.items():
            breaches.labels(v.model, v.version, name).set(len(found["breaches"]))
        for outcome, est in v.estimated.items():
            for kind in ("estimated", "measured"):
                if est[kind] is not None:
                    auroc.labels(v.model, v.version, outcome, kind).set(est[kind])
    for reads in report.imaging:
        predictions.labels(reads.model, reads.version).set(reads.n)
    end.set(datetime.fromisoformat(report.until.replace("Z", "+00:00")).timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
