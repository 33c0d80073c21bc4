"""Soak benchmark of ``vigil serve`` on loopback: sustained load for a bounded time, p99 and memory per window.

One ``vigil serve`` process (``--workers``, default 1) is driven by the closed-loop load generator of
``benchmarks/serving_load.py`` (its own process, standard library only, persistent keep-alive connections) at
``--concurrency`` clients, the load the service holds without queueing (docs/serving_benchmark.md: the
throughput is flat from C=1 to C=4, and p99 climbs steeply past it). The run is cut into ``--window``-second
windows; after each one the script records throughput, p50/p99/max latency, errors, and the resident memory
(VmRSS) of every process of the server's process group. Every ``--imaging-every``-th request is a chest X-ray
second read of a real DICOM fixture, so both models and the heat-map path stay in the loop.

Memory verdict: the growth from the end of the first window (models loaded, allocator and caches warm) to the
end of the run must stay under ``--rss-bound-mib``; the least-squares slope over the windows is reported too.
At the end the audit table must hold a record for every answered prediction, and its hash chain must verify.

Run from the repository root after ``vigil run`` has registered the @candidate models in the work folder::

    .venv/bin/python benchmarks/soak.py --work-dir /tmp/bench-work [--duration 600] [--out docs/reliability_soak.md]

Writes ``--out`` (Markdown) and the same numbers as JSON next to it. Every request goes to 127.0.0.1; the run
stops by itself after ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_load as sl  # the load generator, server handling and records are shared

logger = logging.getLogger("soak")
REPO = sl.REPO


def group_rss_mib(pgid: int) -> float:
    """Resident memory (VmRSS) of every live process in process group ``pgid``, in MiB."""
    total_kb = 0
    for entry, _fields in sl.group_processes(pgid):
        try:
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended between the two reads
    return total_kb / 1024


def slope_mib_per_hour(times_s: list[float], rss: list[float]) -> float:
    """Least-squares slope of memory over time (MiB per hour); 0 with fewer than two points."""
    if len(times_s) < 2:
        return 0.0
    mt, mr = statistics.fmean(times_s), statistics.fmean(rss)
    den = sum((t - mt) ** 2 for t in times_s)
    return 0.0 if den == 0 else 3600.0 * sum((t - mt) * (r - mr) for t, r in zip(times_s, rss, strict=True)) / den


def records(spec: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` triage records: real KTAS visits (``ktas``) or the seeded synthetic generator (``synthetic``)."""
    if spec == "ktas":
        return sl.triage_records(n, seed)
    from models.triage.record import RECORD_FIELDS, validate_record
    from training.data import load_dataset

    frame = load_dataset(f"synthetic:n={n},seed={seed}").frame
    out = []
    for row in json.loads(frame[list(RECORD_FIELDS)].to_json(orient="records", date_format="iso")):
        row = {k: v for k, v in row.items() if v is not None}
        validate_record(row)
        out.append(row)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import shutil

    from serving.store.database import Store

    scratch = Path(tempfile.mkdtemp(prefix="soak-"))
    store = Store(f"sqlite:///{(args.work_dir / 'serving.db').resolve()}")
    store.create_schema()
    info, key = store.create_key("soak", ["triage", "imaging"])
    try:
        result = _run(args, scratch, store, key)
    except BaseException:
        logger.error("the soak failed; its scratch folder and the server's log are kept in %s", scratch)
        raise
    finally:
        store.revoke_key(info.key_id)
        store.dispose()
    shutil.rmtree(scratch, ignore_errors=True)
    return result


def _run(args: argparse.Namespace, scratch: Path, store: Any, key: str) -> dict[str, Any]:
    t_start = time.monotonic()
    load_start = sl.loadavg()
    git = sl.git_state()
    auth = {"Authorization": f"Bearer {key}"}
    recs = records(args.data, args.records, args.seed)
    files: list[Path] = []
    dicom = (sl.FIXTURES / sl.IMAGING_FIXTURES[0]).read_bytes() if args.imaging_every else b""
    for i, rec in enumerate(recs):
        if args.imaging_every and i % args.imaging_every == args.imaging_every - 1:
            body, ctype, path = dicom, "application/dicom", "/v1/imaging/second-read"
        else:
            body, ctype, path = json.dumps(rec).encode(), "application/json", "/v1/triage"
        f = scratch / f"req-{i}.http"
        f.write_bytes(sl.raw_request(0, path, body, {**auth, "Content-Type": ctype}))
        files.append(f)
    audit_before = _audit_count(store)

    server = sl.vigil_server(args, args.workers, scratch)
    try:
        ready_s = server.wait_ready()
        sl.check_vigil(server, key, recs[0], dicom or (sl.FIXTURES / sl.IMAGING_FIXTURES[0]).read_bytes())
        rss_start = group_rss_mib(server.proc.pid)
        logger.info(
            "server ready after %.1f s; RSS %.1f MiB; soaking %.0f s at C=%d in %.0f s windows",
            ready_s,
            rss_start,
            args.duration,
            args.concurrency,
            args.window,
        )
        windows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        n_windows = max(1, round(args.duration / args.window))
        level = argparse.Namespace(warmup=0.0, duration=args.window)
        for i in range(n_windows):
            row = sl.run_level(server, files, args.concurrency, level, scratch)
            row["window"] = i + 1
            row["t_end_s"] = time.monotonic() - t0
            row["rss_mib"] = group_rss_mib(server.proc.pid)
            if server.proc.poll() is not None:
                raise RuntimeError(f"the server exited during the soak; see {server.log_path}")
            logger.info(
                "window %d/%d: %.0f req/s, p99 %.1f ms, errors %d, RSS %.1f MiB",
                i + 1,
                n_windows,
                row["rps"],
                row["p99_ms"],
                row["errors"],
                row["rss_mib"],
            )
            windows.append(row)
    finally:
        server.stop()
    audited = _audit_count(store) - audit_before
    chain_ok, broken_at = store.verify_audit_chain()
    ok_total = sum(w["ok"] for w in windows) + 2  # + the two requests of check_vigil
    growth = windows[-1]["rss_mib"] - windows[0]["rss_mib"]
    slope = slope_mib_per_hour([w["t_end_s"] for w in windows], [w["rss_mib"] for w in windows])
    all_ms = [w["p99_ms"] for w in windows]
    return {
        "command": "python benchmarks/soak.py " + shlex.join(sys.argv[1:]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git,
        "machine": sl.machine(),
        "versions": sl.versions(),
        "load_start": load_start,
        "settings": {
            "duration_s": args.duration,
            "window_s": args.window,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "records": len(recs),
            "data": args.data,
            "imaging_every": args.imaging_every,
            "rss_bound_mib": args.rss_bound_mib,
        },
        "ready_s": ready_s,
        "rss_start_mib": rss_start,
        "windows": windows,
        "totals": {
            "ok": sum(w["ok"] for w in windows),
            "errors": sum(w["errors"] for w in windows),
            "rps_mean": statistics.fmean(w["rps"] for w in windows),
            "p99_worst_window_ms": max(all_ms),
            "p99_median_window_ms": statistics.median(all_ms),
        },
        "memory": {
            "growth_after_first_window_mib": growth,
            "slope_mib_per_hour": slope,
            "within_bound": growth <= args.rss_bound_mib,
        },
        # Requests still in flight when a window closes are answered (and audited) after it, uncounted: at most
        # C per window. Fewer records than answered predictions would be an unaudited result.
        "audit": {
            "records_written": audited,
            "answered_predictions": ok_total,
            "in_flight_allowance": args.concurrency * len(windows),
            "every_prediction_audited": ok_total <= audited <= ok_total + args.concurrency * len(windows),
            "chain_verifies": chain_ok,
            "broken_at": broken_at,
        },
        "load_end": sl.loadavg(),
        "wall_s": time.monotonic() - t_start,
    }


def _audit_count(store: Any) -> int:
    n, since = 0, 0
    while batch := store.read_audit(limit=10_000, since_seq=since):
        n += len(batch)
        since = batch[-1].seq
    return n


def verdict(result: dict[str, Any]) -> bool:
    return (
        result["totals"]["errors"] == 0
        and result["memory"]["within_bound"]
        and result["audit"]["every_prediction_audited"]
        and result["audit"]["chain_verifies"]
    )


def render(result: dict[str, Any]) -> str:
    s, m, a, t = result["settings"], result["memory"], result["audit"], result["totals"]
    lines = [
        "# Soak benchmark: sustained load on `vigil serve`",
        "",
        f"Produced by `{result['command']}` on {result['date_utc']} (commit {result['git']['commit'][:10]}"
        + (f", with uncommitted changes to {', '.join(result['git']['modified'])}" if result["git"]["modified"] else "")
        + f"); {result['machine']['nproc']} CPUs ({result['machine']['cpu_model']}), load average "
        f"at start {result['load_start']}, at the end {result['load_end']}. Loopback only; the load generator shares "
        "the machine's CPUs.",
        "",
        f"{s['duration_s']:.0f} s at C={s['concurrency']} closed-loop clients on one keep-alive connection each, "
        f"{s['workers']} worker(s), {s['records']} distinct {s['data']} records"
        + (f", every {s['imaging_every']}th request a chest X-ray second read" if s["imaging_every"] else "")
        + f"; {s['window_s']:.0f} s windows. Server ready after {result['ready_s']:.1f} s.",
        "",
        f"**Verdict: {'PASS' if verdict(result) else 'FAIL'}** — {t['ok']:,} requests answered, "
        f"**{t['errors']} errors**; mean {t['rps_mean']:.0f} req/s; p99 {t['p99_median_window_ms']:.1f} ms in the "
        f"median window, {t['p99_worst_window_ms']:.1f} ms in the worst; memory growth after the first window "
        f"**{m['growth_after_first_window_mib']:+.1f} MiB** (bound {s['rss_bound_mib']} MiB; slope "
        f"{m['slope_mib_per_hour']:+.1f} MiB/h); audit records written {a['records_written']:,} for "
        f"{a['answered_predictions']:,} answered predictions (plus at most {a['in_flight_allowance']} answered "
        "after a window closed), hash chain "
        f"{'verifies' if a['chain_verifies'] else 'BROKEN at ' + str(a['broken_at'])}.",
        "",
        "| window | end (s) | req/s | p50 ms | p99 ms | max ms | errors | server CPU ms/req | RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in result["windows"]:
        lines.append(
            f"| {w['window']} | {w['t_end_s']:.0f} | {w['rps']:.0f} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f}"
            f" | {w['max_ms']:.1f} | {w['errors']} | {w['server_cpu_ms_per_req']:.2f} | {w['rss_mib']:.1f} |"
        )
    lines += [
        "",
        f"RSS before the first window (after two check requests): {result['rss_start_mib']:.1f} MiB. "
        "RSS is the sum over the server's process group (the uvicorn process, and its workers when "
        "`--workers` > 1).",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("vigil-work"),
        help="VIGIL_WORK_DIR holding mlflow.db with vigil-triage and vigil-cxr @candidate",
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of sustained load")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per reported window")
    parser.add_argument("--concurrency", type=int, default=4, help="closed-loop clients")
    parser.add_argument("--workers", type=int, default=1, help="vigil serve --workers")
    parser.add_argument("--records", type=int, default=200, help="distinct requests sent in turn")
    parser.add_argument("--data", choices=("ktas", "synthetic"), default="ktas", help="where the records come from")
    parser.add_argument("--imaging-every", type=int, default=50, help="every Nth request is a second read (0: none)")
    parser.add_argument(
        "--rss-bound-mib", type=float, default=32.0, help="largest memory growth after the first window that passes"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability_soak.md")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.window <= 0 or args.window > args.duration:
        parser.error("--duration and --window must be > 0, with --window <= --duration")
    if args.concurrency < 1 or args.workers < 1 or args.records < 1 or args.imaging_every < 0:
        parser.error("--concurrency, --workers and --records must be >= 1; --imaging-every >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(render(result).split("\n\n")[3])
    return 0 if verdict(result) else 1


if __name__ == "__main__":
    raise SystemExit(main())
