"""Power and false-alarm rate of the fairness release gate, by simulation through the real audit and gate.

Two groups of ``--n-per-group`` patients; group A under-triaged at ``--base`` (10%), group B at base + gap
for each gap in ``--gaps`` (0, 2, 3 and 5 percentage points by default); ``--seeds`` simulated data sets per
gap. Each is audited (:func:`fairness.audit.audit`, ``--n-boot`` resamples) and gated
(:func:`fairness.policy.gate`) with the shipped ``fairness/release_policy.yaml``, whose
``required_attributes`` is replaced by the simulated attribute (``group``) so that the absent sex and age
band do not make every run "insufficient evidence". A null scenario with ``--null-groups`` equal groups
measures false alarms when an attribute has more than two groups.

Everything except under-triage is the same in every group (a calibrated score, the same operating
threshold), so any other failing check is a false alarm too; the table reports both the under-triage check
and the gate's overall verdict. Results are written to ``--out`` (Markdown) with the exact command.

Run from the repository root::

    nice -n 19 .venv/bin/python benchmarks/fairness_power.py
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from fairness.audit import AuditSpec, audit
from fairness.policy import FAIL, gate, load_policy

logger = logging.getLogger("fairness_power")

#: True triage levels 1-4 (no level 5, so that every patient can be under-triaged) and admission risk.
LEVEL_P = np.array([0.05, 0.25, 0.45, 0.25])
ADMIT_MEAN = np.array([0.75, 0.45, 0.22, 0.08])


def simulate(rng: np.random.Generator, rates: list[float], n_per_group: int) -> pd.DataFrame:
    """One data set: ``len(rates)`` groups (A, B, ...) with under-triage rate ``rates[k]`` in group k."""
    frames = []
    for k, rate in enumerate(rates):
        n = n_per_group
        true = rng.choice(4, size=n, p=LEVEL_P) + 1
        under = rng.random(n) < rate
        over = ~under & (true > 1) & (rng.random(n) < 0.10)
        pred = true + under.astype(int) - over.astype(int)
        mean = ADMIT_MEAN[true - 1]
        score = rng.beta(4.0 * mean / (1 - mean), 4.0, size=n)  # mean ADMIT_MEAN, the same in every group
        y = (rng.random(n) < score).astype(int)  # calibrated by construction
        frames.append(
            pd.DataFrame({"group": chr(ord("A") + k), "acuity_true": true, "acuity_pred": pred, "y": y, "score": score})
        )
    frame = pd.concat(frames, ignore_index=True)
    frame["flag"] = (frame["score"] >= 0.3).astype(int)
    return frame


def run_scenario(rates: list[float], seeds: int, args: argparse.Namespace, policy: object) -> dict[str, float]:
    ut_fail = overall_fail = other_fail = 0
    elapsed = []
    for seed in range(seeds):
        rng = np.random.default_rng([args.seed, seed, int(1000 * sum(rates)), len(rates)])
        frame = simulate(rng, rates, args.n_per_group)
        spec = AuditSpec(
            y_true="y",
            y_score="score",
            y_flag="flag",
            acuity_true="acuity_true",
            acuity_pred="acuity_pred",
            sensitive_attributes=["group"],
            reference_groups={"group": "A"},
            n_boot=args.n_boot,
            seed=seed,
        )
        started = time.perf_counter()
        result = gate(audit(frame, spec), policy)  # type: ignore[arg-type]
        elapsed.append(time.perf_counter() - started)
        failing = [c for c in result.checks if c.status == FAIL]
        ut_fail += any(c.metric == "under_triage_rate" for c in failing)
        other_fail += any(c.metric != "under_triage_rate" for c in failing)
        overall_fail += result.status == FAIL
    n = seeds
    return {
        "under_triage": ut_fail / n,
        "other": other_fail / n,
        "overall": overall_fail / n,
        "seconds_per_run": float(np.mean(elapsed)),
    }


def _ci(p: float, n: int) -> str:
    """Rate with its 95% Wilson interval (sensible at 0 and 1, unlike the Wald interval)."""
    z = 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"{p:.3f} ({max(0.0, centre - half):.3f} to {min(1.0, centre + half):.3f})"


def _theory(base: float, gap: float, n: int, tol: float) -> float:
    """Normal approximation of the two-group rule: fail when |D| > max(tol, 1.96 SE)."""
    se = np.sqrt(base * (1 - base) / n + (base + gap) * (1 - base - gap) / n)
    c = max(tol, 1.96 * se)
    return float(norm.sf((c - gap) / se) + norm.cdf((-c - gap) / se))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--n-per-group", type=int, default=2000)
    parser.add_argument("--base", type=float, default=0.10)
    parser.add_argument("--gaps", type=str, default="0,0.02,0.03,0.05")
    parser.add_argument("--null-groups", type=int, default=4, help="groups in the extra null scenario (0: skip)")
    parser.add_argument("--null-seeds", type=int, default=100, help="seeds of the extra null scenario")
    parser.add_argument("--n-boot", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--out", type=Path, default=Path("docs/fairness_gate_power.md"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fairness.audit").setLevel(logging.WARNING)

    shipped = load_policy()
    policy = dataclasses.replace(shipped, required_attributes=("group",))
    tol = shipped.max_gap["under_triage_rate"]
    gaps = [float(g) for g in args.gaps.split(",")]
    scenarios = [(f"2 groups, gap {100 * g:g} pp", [args.base, args.base + g], g, args.seeds) for g in gaps]
    if args.null_groups > 2:
        rates = [args.base] * args.null_groups
        scenarios.append((f"{args.null_groups} groups, no gap", rates, None, args.null_seeds))

    started = time.perf_counter()
    rows = []
    for name, rates, gap, seeds in scenarios:
        t0 = time.perf_counter()
        r = run_scenario(rates, seeds, args, policy)
        logger.info(
            "%s: under-triage check failed %.3f, gate failed %.3f (%.0f s)",
            name,
            r["under_triage"],
            r["overall"],
            time.perf_counter() - t0,
        )
        theory = "" if gap is None else f"{_theory(args.base, gap, args.n_per_group, tol):.3f}"
        rows.append((name, r, theory, seeds))
    total = time.perf_counter() - started

    command = "nice -n 19 .venv/bin/python benchmarks/fairness_power.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    lines = [
        "# Fairness release gate: power and false alarms",
        "",
        "Generated by `benchmarks/fairness_power.py` (do not edit by hand). Command, from the repository root:",
        "",
        f"    {command.strip()}",
        "",
        f"Simulation: groups of {args.n_per_group} patients, base under-triage {args.base:.0%}, "
        f"{args.n_boot} bootstrap resamples (row bootstrap), shipped policy "
        f"{shipped.policy_version} (`max_gap.under_triage_rate: {tol:g}`, straddle rule `{shipped.straddle_rule}`) "
        "with `required_attributes: [group]`. Everything but under-triage is identical across groups, so a "
        "failing check on another metric is a false alarm.",
        "",
        "Rates with a 95% Wilson interval. *Theory*: normal approximation of the rule "
        "`|D| > max(tolerance, 1.96 SE)` (fairness/policy.py).",
        "",
        "| scenario | seeds | under-triage check fails | theory | any other check fails | gate fails | s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r, theory, seeds in rows:
        lines.append(
            f"| {name} | {seeds} | {_ci(r['under_triage'], seeds)} | {theory or 'n/a'} | {_ci(r['other'], seeds)} | "
            f"{_ci(r['overall'], seeds)} | {r['seconds_per_run']:.2f} |"
        )
    lines += [
        "",
        "Requirements: (a) the 5 pp gap is caught at least 90% of the time; (b) at most 5% false alarms with no "
        "gap (the `gap 0 pp` and `no gap` rows of the under-triage column).",
        "",
        f"Total runtime {total:.0f} s on this machine (shared; run under `nice`).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s in %.0f s", args.out, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
