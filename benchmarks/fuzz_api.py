"""Bad input: schemathesis against the service's own OpenAPI description, every operation, in-process.

The service is built as the serving tests build it (:func:`serving.api.app.create_app` on a local model folder whose
release records pass, a fresh SQLite key/audit store, one API key per scope and one with every scope) and driven
through Starlette's ``TestClient``: the whole ASGI stack (middleware, authentication, routes, error handlers, audit
writes) runs in this process and nothing listens on a socket. The models are small ones trained on synthetic data
exactly as the ``registered`` and ``model_folder`` fixtures of tests/conftest.py train them, or those of
``--model-dir``.

Every operation of the document the service serves at ``/openapi.json`` is fuzzed by the harness of
tests/fuzzing.py, the one the fast form in the suite (tests/serving/test_fuzz_openapi.py) uses too:
``--max-examples`` positive and ``--max-examples`` negative generated requests, and on a secured operation
``--auth-examples`` requests each with no key, an unknown key and a key without the route's scope; every response
goes through schemathesis's checks (tests/fuzzing.py says which and how). The run is bounded by ``--time-budget``
(from its start, training included): after it, remaining examples are counted as skipped and not sent.

Run from the repository root::

    .venv/bin/python benchmarks/fuzz_api.py [--model-dir FOLDER] [--max-examples 300]

Writes ``--out`` (Markdown, default docs/reliability_fuzz.md) and the same figures as JSON next to it; exits 1 when
any failure was found.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: the harness in tests/
from tests.fuzzing import (
    CHECK_NAMES,
    KEY_SCOPES,
    OperationRecord,
    fuzz_operation,
    known_inputs,
    load_schema,
    operation_labels,
    probe_auth,
    register_serializers,
    synthetic_dicom,
)

logger = logging.getLogger("fuzz_api")

REPO = Path(__file__).resolve().parents[1]
_MODEL_FILES = ("vigil-triage.onnx", "vigil-triage.release.json", "vigil-cxr.onnx", "vigil-cxr.release.json")


# ----------------------------------------------------------------------------------------------- the service
def train_models(folder: Path, work: Path) -> Path:
    """Both models trained briefly on synthetic data, as tests/conftest.py's ``registered`` fixture trains them,
    and written to ``folder`` with passing release records, as its ``model_folder`` fixture writes them."""
    from models.onnx_file import sha256_file
    from serving.model_source import ResolvedModel, write_local_release
    from training.config import load_imaging_config, load_triage_config
    from workflows.imaging import run_imaging
    from workflows.triage import run_triage

    saved = {
        k: os.environ.get(k) for k in ("VIGIL_WORK_DIR", "VIGIL_DATA_DIR", "MLFLOW_TRACKING_URI", "VIGIL_MLFLOW_URI")
    }
    os.environ["VIGIL_WORK_DIR"] = str(work)
    os.environ["VIGIL_DATA_DIR"] = str(work / "no-data-here")  # no real data: the synthetic generators
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("VIGIL_MLFLOW_URI", None)
    try:
        triage = run_triage(
            load_triage_config(
                overrides={"epochs": 3, "synthetic_train_n": 2000, "synthetic_test_n": 600, "bootstrap_resamples": 10}
            ),
            progress=False,
        )
        imaging = run_imaging(
            load_imaging_config(
                overrides={
                    "epochs": 2,
                    "patience": 2,
                    "synthetic_n": 200,
                    "image_size": 64,
                    "batch_size": 32,
                    "bootstrap_resamples": 10,
                }
            ),
            progress=False,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    gate = {
        "status": "pass",
        "policy_version": "test",
        "checked_utc": "2026-11-23T00:00:00Z",
        "summary": "test fixture",
    }
    for task, name, path in (
        ("triage", "vigil-triage", triage.onnx_path),
        ("imaging", "vigil-cxr", imaging.shipped_path),
    ):
        write_local_release(folder, ResolvedModel(task, name, "7", path, sha256_file(path), dict(gate), "fuzz"))
    return folder


@contextlib.contextmanager
def service(work: Path, model_dir: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    """The app on ``model_dir`` with a fresh SQLite store and the keys of :data:`KEY_SCOPES`: (client, keys)."""
    from fastapi.testclient import TestClient

    from serving.api.app import create_app
    from serving.settings import ServingSettings
    from serving.store.database import Store

    cfg = ServingSettings(work_dir=work, model_source="local", model_dir=model_dir, threads=1)
    store = Store(cfg.store_url())
    store.create_schema()
    keys = {name: store.create_key(f"fuzz-{name}", list(scopes))[1] for name, scopes in KEY_SCOPES.items()}
    with TestClient(create_app(cfg, store=store), raise_server_exceptions=False) as client:
        yield client, keys


# ----------------------------------------------------------------------------------------------- the run
def git_state() -> dict[str, Any]:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    diff = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    return {"commit": head.stdout.strip(), "modified": diff.stdout.split()}


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("schemathesis", "hypothesis", "fastapi", "starlette", "pydantic", "onnxruntime")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    register_serializers()
    started = time.monotonic()
    git_start = git_state()
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as scratch:
        scratch_dir = Path(scratch)
        model_dir = args.model_dir
        train_s = 0.0
        if model_dir is None:
            logger.info("training the small synthetic models (as tests/conftest.py does)")
            t0 = time.monotonic()
            model_dir = train_models(scratch_dir / "models", scratch_dir / "train-work")
            train_s = time.monotonic() - t0
        missing = [f for f in _MODEL_FILES if not (model_dir / f).is_file()]
        if missing:
            raise SystemExit(f"--model-dir {model_dir}: missing {', '.join(missing)}")
        (scratch_dir / "serve").mkdir()
        fuzz_started = time.monotonic()
        deadline = started + args.time_budget
        with service(scratch_dir / "serve", model_dir) as (client, keys):
            schema = load_schema(client, keys["all"])
            labels = operation_labels(client.get("/openapi.json").json())
            known = known_inputs(*synthetic_dicom())
            records = []
            for i, label in enumerate(labels):
                record = OperationRecord(label)
                fuzz_operation(
                    client,
                    schema,
                    label,
                    max_examples=args.max_examples,
                    record=record,
                    deadline=deadline,
                    seed=args.seed,
                    known=known.get(label),
                )
                probe_auth(
                    client,
                    schema,
                    label,
                    keys,
                    examples=args.auth_examples,
                    record=record,
                    deadline=deadline,
                    seed=args.seed,
                )
                records.append(record)
                logger.info(
                    "[%d/%d] %-32s %5d requests  %s  failures %d  (%.0f s)",
                    i + 1,
                    len(labels),
                    label,
                    record.total_requests,
                    dict(sorted(record.statuses.items())),
                    record.n_failures,
                    record.seconds,
                )
        fuzz_s = time.monotonic() - fuzz_started
    rows = [r.as_dict() for r in records]
    statuses: collections.Counter[str] = collections.Counter()
    for r in records:
        statuses.update(r.statuses)
    return {
        "command": shlex.join([".venv/bin/python", "benchmarks/fuzz_api.py", *sys.argv[1:]]),
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_start,
        "git_at_end": git_state(),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "loadavg_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        },
        "versions": versions(),
        "settings": {
            "max_examples": args.max_examples,
            "auth_examples": args.auth_examples,
            "seed": args.seed,
            "time_budget_s": args.time_budget,
            "models": "--model-dir" if args.model_dir else "trained",
            "checks": list(CHECK_NAMES),
        },
        "operations": rows,
        "totals": {
            "operations": len(rows),
            "requests": sum(r["total_requests"] for r in rows),
            "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(r["server_errors"] for r in rows),
            "failures": sum(r["n_failures"] for r in rows),
            "schema_failures": sum(
                n for r in rows for kind, n in r["failure_kinds"].items() if kind not in ("ServerError", "Crash")
            ),
            "unsendable": sum(r["unsendable"] for r in rows),
            "skipped_after_time_budget": sum(r["skipped_after_time_budget"] for r in rows),
        },
        "train_s": round(train_s, 1),
        "fuzz_s": round(fuzz_s, 1),
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def render(result: dict[str, Any]) -> str:
    t, s = result["totals"], result["settings"]
    status_cols = sorted(t["statuses"], key=int)
    git = result["git"]
    lines = [
        "# Reliability: schemathesis against the service's own OpenAPI description",
        "",
        f"Command (repository root): `{result['command']}`  ",
        f"Date: {result['date_utc']}; commit `{git['commit']}`"
        + (f" plus uncommitted changes to {', '.join(f'`{m}`' for m in git['modified'])}" if git["modified"] else "")
        + (". **The working tree changed during the run**" if result["git_at_end"] != git else "")
        + ".  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".  ",
        f"Machine: {result['machine']['nproc']} CPUs, Python {result['machine']['python']}, Linux "
        f"{result['machine']['kernel']}; load average at the end {result['machine']['loadavg_end']}.  ",
        f"Took {result['elapsed_s']:.0f} s: {result['train_s']:.0f} s training the synthetic models"
        + (" (none: `--model-dir`)" if s["models"] == "--model-dir" else "")
        + f", {result['fuzz_s']:.0f} s fuzzing (time budget for the whole run: {s['time_budget_s']:.0f} s).",
        "",
        "## Result",
        "",
        f"* **{t['requests']} requests** over **{t['operations']} operations** (every operation of the document); "
        f"{t['skipped_after_time_budget']} examples skipped at the time budget; {t['unsendable']} generated requests "
        "no HTTP client could send (not counted as requests).",
        f"* **5xx responses: {t['server_errors']}.** **Check failures: {t['failures']}** "
        f"(of which not a 5xx or a crash: {t['schema_failures']}).",
        "* Status codes over the whole run: " + ", ".join(f"{k}: {v}" for k, v in t["statuses"].items()) + ".",
        "",
        "## Method",
        "",
        "* The service is `serving.api.app.create_app` on small models trained on synthetic data (as the test fixtures "
        "train them), a fresh SQLite key and audit store, one key per scope and one with every scope, driven "
        "in-process through Starlette's TestClient: middleware, authentication, routes, error handlers and audit "
        "writes all run; no socket.",
        "* The document is the one the service serves at `/openapi.json` (docs/openapi.json). Requests are "
        "generated by schemathesis (`APIOperation.as_strategy`) under hypothesis, serialized as schemathesis "
        "serializes them for `requests` and prepared by `requests`; `multipart/related` (STOW-RS) bodies wrap the "
        "generated bytes as one `application/dicom` part.",
        f"* Per operation: up to {s['max_examples']} **positive** requests (parameters and body as documented, the "
        "all-scope key, an `Accept` drawn from the documented success media types) and up to "
        f"{s['max_examples']} **negative** ones (some part breaks the document; on a secured operation that is often "
        "only the key, answered 401, and on one without parameters always); hypothesis sends fewer when an operation "
        "admits fewer distinct inputs (`GET /healthz` admits two: with and without `Accept: application/json`). "
        "Known values random generation practically never hits (the CDS service id, a decodable chest DICOM "
        "instance and its study UID) are drawn as often as generated ones in positive requests. For operations with "
        f"a security requirement, {s['auth_examples']} positive requests each with **no key** (must be 401 with "
        "`WWW-Authenticate`), an **unknown key** (401) and a **key without the route's scope** (403; not for "
        "`GET /v1/models`, which any key may call).",
        "* Every response goes through schemathesis's " + ", ".join(f"`{c}`" for c in s["checks"]) + ": any 5xx, "
        "a status code, media type, body or header the document does not declare for the operation is a failure; "
        "so is an exception out of the app or a wrong status from an authentication probe.",
        f"* Seed {s['seed']} (each operation and phase derives its own from it), so a rerun sends the same requests.",
        "",
        "## Per operation",
        "",
        "| operation | positive | negative | no key | unknown key | wrong scope | "
        + " | ".join(status_cols)
        + " | failures | s |",
        "|---|" + "---:|" * (5 + len(status_cols) + 2),
    ]
    for r in result["operations"]:
        req = r["requests"]
        lines.append(
            f"| `{r['operation']}` | "
            + " | ".join(str(req.get(p, 0)) for p in ("positive", "negative", "no_key", "unknown_key", "wrong_scope"))
            + " | "
            + " | ".join(str(r["statuses"].get(c, "")) for c in status_cols)
            + f" | {r['n_failures']} | {r['seconds']:.0f} |"
        )
    lines += ["", "## Failures", ""]
    failed = [r for r in result["operations"] if r["n_failures"]]
    if not failed:
        lines.append(
            "None: no 5xx, no crash, and every response matched the status codes, media types and schemas "
            "the document declares."
        )
    for r in failed:
        lines.append(f"### `{r['operation']}`: {r['n_failures']}")
        lines.append("")
        for f in r["failures"][:10]:
            lines.append(
                f"* {f['phase']}: {f['kind']} ({f['title']}), status {f['status']}; request "
                f"`{json.dumps(f['request'])[:400]}`; {f['message'][:300]!r}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a local model folder (vigil-triage.onnx, vigil-cxr.onnx and their .release.json) to "
        "serve instead of training the small synthetic models",
    )
    parser.add_argument(
        "--max-examples", type=int, default=300, help="generated requests per operation and mode (positive, negative)"
    )
    parser.add_argument(
        "--auth-examples", type=int, default=10, help="requests per operation for each authentication probe"
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=570.0,
        help="seconds from the start (training included) after which no more requests are sent",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "reliability_fuzz.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "httpx", "httpx2", "vigil.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(result))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    t = result["totals"]
    print(
        f"{t['requests']} requests over {t['operations']} operations: {t['server_errors']} 5xx, "
        f"{t['failures']} failures; wrote {args.out} and {args.out.with_suffix('.json')} in "
        f"{result['elapsed_s']:.0f} s"
    )
    return 1 if t["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
