"""Power and whole-gate false-alarm rate of the fairness release gate, simulated through the real audit and gate.

Two designs, each audited (:func:`fairness.audit.audit`, ``--n-boot`` resamples) and gated
(:func:`fairness.gate.gate`) with the shipped ``fairness/release_policy.yaml``:

* **Two groups** of ``--n-per-group`` patients (``required_attributes`` replaced by the simulated attribute):
  group A under-triaged at ``--base`` (10%), group B at base + gap, for each gap in ``--gaps``.
* **The real audit's shape**: the admission audit of NHAMCS 2020 (docs/fairness_audit.md): 8,624 visits (the
  9,624 audited, with the age bands 25-44 and 45-64 cut to 2,000 each so that the power scenario is exactly
  "two groups of 2,000"), sex (2 groups), age band (6), ethnicity (4) and payer (8, three of them too small to
  judge) with their observed sizes, the sex x age band intersection (12), admission rates by age band as
  observed (4% under 15 to 34% over 75), a calibrated score and one flag threshold, triage levels with 40%
  under-triage at true levels 1-2. Every metric and attribute the policy checks is checked (the policy's
  ``required_attributes``, pooling and reported-only rules as shipped). Scenarios: no gap anywhere (a fair
  model: any failing check is a false alarm), and a 5 pp under-triage gap between age bands 45-64 and 25-44.

Everything but the planted gap is the same in every group (the score is calibrated in every group, and the
different admission rates across age bands are the real ones), so in the fair scenarios any failing check
is a false alarm. Rates carry 95% Wilson intervals. Results go to ``--out`` (Markdown) with the exact command.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from fairness.audit import audit
from fairness.audit_spec import AuditSpec
from fairness.gate import gate
from fairness.gate_result import FAIL, Check
from fairness.policy import ReleasePolicy, load_policy

logger = logging.getLogger("fairness_power")

#: Two-group design: true triage levels 1-4 (no level 5, so that every patient can be under-triaged).
LEVEL_P = np.array([0.05, 0.25, 0.45, 0.25])
ADMIT_MEAN = np.array([0.75, 0.45, 0.22, 0.08])

#: Real-shape design: group sizes of the NHAMCS 2020 admission audit (docs/fairness_audit.md), 25-44 and 45-64
#: cut to 2,000; every attribute sums to the same 8,624 visits.
REAL_SIZES: dict[str, dict[str, int]] = {
    "sex": {"female": 4500, "male": 4124},
    "age_band": {"<15": 1432, "15-24": 1258, "25-44": 2000, "45-64": 2000, "65-74": 934, "75+": 1000},
    "ethnicity": {"nh_white": 4846, "nh_black": 2020, "hispanic": 1409, "nh_other": 349},
    "payer": {
        "medicaid": 3070,
        "medicare": 1911,
        "private": 2091,
        "self_pay": 696,
        "unknown": 622,
        "no_charge": 34,
        "other": 159,
        "workers_comp": 41,
    },
}
#: Admission rate by age band, as observed on NHAMCS 2020 (54/1,432 ... 339/1,000).
REAL_ADMIT = {"<15": 0.038, "15-24": 0.047, "25-44": 0.071, "45-64": 0.173, "65-74": 0.273, "75+": 0.339}
#: True triage levels 1-5 and the chance of each being given a less urgent level.
REAL_LEVEL_P = np.array([0.02, 0.13, 0.50, 0.30, 0.05])
HIGH_ACUITY_UNDER, OTHER_UNDER = 0.40, 0.05  # about 10% of all patients under-triaged, as on NHAMCS 2020
REAL_REFERENCE = {"sex": "female", "age_band": "25-44", "ethnicity": "nh_white", "payer": "medicaid"}


# ---------------------------------------------------------------------------------------------- data
def simulate_two_groups(rng: np.random.Generator, rates: list[float], n_per_group: int) -> pd.DataFrame:
    """``len(rates)`` groups (A, B, ...) with under-triage rate ``rates[k]`` in group k."""
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


def simulate_real_shape(rng: np.random.Generator, gap: float) -> pd.DataFrame:
    """The admission audit's shape; age band 45-64 under-triaged ``gap`` more (all patients) than the rest."""
    columns = {a: rng.permutation(np.repeat(list(s), list(s.values()))) for a, s in REAL_SIZES.items()}
    frame = pd.DataFrame(columns)
    n = len(frame)
    base = frame["age_band"].map(REAL_ADMIT).to_numpy(dtype=float)
    logit = np.log(base / (1 - base)) + rng.normal(0.0, 1.3, n) - 0.8  # spread of risk within a band
    score = 1.0 / (1.0 + np.exp(-logit))
    frame["y"] = (rng.random(n) < score).astype(int)  # calibrated in every group by construction
    frame["score"] = score
    frame["flag"] = (score >= 0.04).astype(int)
    true = rng.choice(5, size=n, p=REAL_LEVEL_P) + 1
    high = true <= 2
    under = np.where(high, rng.random(n) < HIGH_ACUITY_UNDER, (true < 5) & (rng.random(n) < OTHER_UNDER))
    if gap:  # at true levels 3-4 only, so that high-acuity under-triage stays the same
        eligible = ~under & (true >= 3) & (true < 5)
        extra = (frame["age_band"].to_numpy() == "45-64") & eligible & (rng.random(n) < gap / float(eligible.mean()))
        under |= extra
    pred = np.where(under, np.where(high, 3, np.minimum(true + 1, 5)), true)
    frame["acuity_true"], frame["acuity_pred"] = true, pred
    return frame


# ----------------------------------------------------------------------------------------------- runs
def _spec(
    attributes: list[str],
    intersections: list[tuple[str, ...]],
    refs: dict[str, str],
    policy: ReleasePolicy,
    n_boot: int,
    seed: int,
) -> AuditSpec:
    return AuditSpec(
        y_true="y",
        y_score="score",
        y_flag="flag",
        acuity_true="acuity_true",
        acuity_pred="acuity_pred",
        sensitive_attributes=attributes,
        intersections=intersections,
        reference_groups=refs,
        pool_adjacent=policy.pool_adjacent,
        min_group_n=policy.min_group_n,
        min_group_positives=policy.min_group_positives,
        alpha=policy.alpha,
        n_boot=n_boot,
        seed=seed,
    )


@dataclasses.dataclass
class Tally:
    runs: int = 0
    target: int = 0  # the planted gap's check failed (power) / an under-triage check failed (null)
    caught: int = 0  # a check comparing the planted group (marginal or intersection) failed
    other: int = 0  # any check not involving the planted group failed (with no gap: any other check)
    overall: int = 0  # the gate's verdict was "fail"
    family: float = 0.0
    critical: float = 0.0
    seconds: float = 0.0


def _is_target(check: Check, target_pair: tuple[str, str] | None) -> bool:
    """With no planted gap: any under-triage check. With one: the under-triage check of the planted pair."""
    if target_pair is None:
        return check.metric == "under_triage_rate"
    return check.metric == "under_triage_rate" and {check.group, check.comparator} == set(target_pair)


def _involves(check: Check, group: str | None) -> bool:
    """Whether a check compares the planted group (alone or within an intersection) with another group."""
    if group is None:
        return False
    return any(group in label.split("|") for label in (check.group, check.comparator))


def run(
    make: Callable[[np.random.Generator], pd.DataFrame],
    spec_of: Callable[[int], AuditSpec],
    policy: ReleasePolicy,
    seeds: int,
    stream: list[int],
    target_pair: tuple[str, str] | None,
) -> Tally:
    tally = Tally()
    for seed in range(seeds):
        frame = make(np.random.default_rng([*stream, seed]))
        started = time.perf_counter()
        result = gate(audit(frame, spec_of(seed)), policy)
        elapsed = time.perf_counter() - started
        planted = target_pair[0] if target_pair else None
        tally.runs += 1
        tally.target += any(_is_target(c, target_pair) for c in result.failures)
        tally.caught += any(_involves(c, planted) for c in result.failures)
        if planted is None:
            tally.other += any(not _is_target(c, None) for c in result.failures)
        else:
            tally.other += any(not _involves(c, planted) for c in result.failures)
        tally.overall += result.status == FAIL
        tally.family += result.family_size
        tally.critical += result.critical_value
        tally.seconds += elapsed
    return tally


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """Rate and its 95% Wilson interval (sensible at 0 and 1, unlike the Wald interval)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def _ci(k: int, n: int) -> str:
    p, lo, hi = wilson(k, n)
    return f"{p:.3f} ({lo:.3f} to {hi:.3f})"


def _theory(base: float, gap: float, n: int, tol: float, c: float) -> float:
    """Normal approximation of the two-group rule: fail when |D| > max(tol, c SE)."""
    se = np.sqrt(base * (1 - base) / n + (base + gap) * (1 - base - gap) / n)
    bound = max(tol, c * se)
    return float(norm.sf((bound - gap) / se) + norm.cdf((-bound - gap) / se))


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200, help="seeds of each no-gap and 5 pp scenario")
    parser.add_argument("--other-seeds", type=int, default=100, help="seeds of the other two-group gaps")
    parser.add_argument("--real-seeds", type=int, default=200, help="seeds of the real-shape fair scenario")
    parser.add_argument("--real-power-seeds", type=int, default=100, help="seeds of the real-shape 5 pp scenario")
    parser.add_argument("--n-per-group", type=int, default=2000)
    parser.add_argument("--base", type=float, default=0.10)
    parser.add_argument("--gaps", type=str, default="0,0.02,0.03,0.05")
    parser.add_argument("--n-boot", type=int, default=250)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--out", type=Path, default=Path("docs/fairness_gate_power.md"))
    parser.add_argument(
        "--audits",
        type=int,
        default=2,
        help="gated audits per release: the policy's alpha is split equally across them (vigil "
        "release gates NHAMCS 2020 admission and critical care: 2)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fairness.audit").setLevel(logging.WARNING)

    shipped = load_policy()
    shipped = dataclasses.replace(shipped, alpha=shipped.alpha / max(1, args.audits))  # as vigil release does
    two_policy = dataclasses.replace(shipped, required_attributes=("group",))
    tol = shipped.max_gap["under_triage_rate"]
    started = time.perf_counter()

    rows: list[tuple[str, int, Tally, str]] = []
    for gap in (float(g) for g in args.gaps.split(",")):
        seeds = args.seeds if gap in (0.0, 0.05) else args.other_seeds
        rates = [args.base, args.base + gap]
        t0 = time.perf_counter()
        tally = run(
            lambda rng, rates=rates: simulate_two_groups(rng, rates, args.n_per_group),
            lambda seed: _spec(["group"], [], {"group": "A"}, two_policy, args.n_boot, seed),
            two_policy,
            seeds,
            [args.seed, 2, round(1000 * gap)],
            ("B", "A") if gap else None,
        )
        c = tally.critical / tally.runs
        rows.append(
            (
                f"2 groups of {args.n_per_group}, gap {100 * gap:g} pp",
                seeds,
                tally,
                f"{_theory(args.base, gap, args.n_per_group, tol, c):.3f}",
            )
        )
        logger.info(
            "%s: target %.3f, gate %.3f (%.0f s)",
            rows[-1][0],
            tally.target / seeds,
            tally.overall / seeds,
            time.perf_counter() - t0,
        )

    attributes = list(REAL_SIZES)
    intersections = [("sex", "age_band")]
    for name, gap, seeds in (
        ("real audit shape, no gap (fair model)", 0.0, args.real_seeds),
        ("real audit shape, 5 pp under-triage gap 45-64 vs 25-44 (2,000 each)", 0.05, args.real_power_seeds),
    ):
        t0 = time.perf_counter()
        tally = run(
            lambda rng, gap=gap: simulate_real_shape(rng, gap),
            lambda seed: _spec(attributes, intersections, REAL_REFERENCE, shipped, args.n_boot, seed),
            shipped,
            seeds,
            [args.seed, 6, round(1000 * gap)],
            ("45-64", "25-44") if gap else None,
        )
        rows.append((name, seeds, tally, "n/a"))
        logger.info(
            "%s: target %.3f, gate %.3f (%.0f s)",
            name,
            tally.target / seeds,
            tally.overall / seeds,
            time.perf_counter() - t0,
        )
    total = time.perf_counter() - started

    command = "nice -n 19 .venv/bin/python benchmarks/fairness_power.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    reported = ", ".join(
        f"{m} ({', '.join(r.attributes) if r.attributes else 'everywhere'})" for m, r in shipped.reported_only.items()
    )
    lines = [
        "# Fairness release gate: power and whole-gate false alarms",
        "",
        "Generated by `benchmarks/fairness_power.py` (do not edit by hand). Command, from the repository root:",
        "",
        f"    {command.strip()}",
        "",
        f"Shipped policy {shipped.policy_version}: family-wise alpha {shipped.alpha:g} over every check of an audit "
        f"(the policy's {shipped.alpha * max(1, args.audits):g} split over the {args.audits} gated audits of a "
        "release, so the whole release's false-alarm rate is at most the policy's alpha by the union bound), "
        f"straddle rule `{shipped.straddle_rule}`, gaps {dict(shipped.max_gap)}, group minimums "
        f"{dict(shipped.min_group)}, maximums {dict(shipped.max_group)}, reported only: "
        f"{reported}. "
        f"{args.n_boot} bootstrap resamples per audit (row bootstrap; `vigil release` uses 1,000).",
        "",
        "Rates with 95% Wilson intervals. **Pair check**: with a planted gap, the under-triage check of the "
        "planted pair fails (power of that one check); with no gap, any under-triage check fails. **Caught**: any "
        "check comparing the planted group fails (its pair, the largest-minus-smallest gap, or its cells of the "
        "sex x age intersection): the gate has found the gap. **Elsewhere**: a check not involving the planted "
        "group fails (with no gap: any check other than under-triage); every such failure is a false alarm. "
        "**Gate fails**: the gate's verdict. "
        "*Family* is the mean number of statistics judged together, *c* the mean max-T critical value "
        "(1.96 for one check). *Theory* (two groups): the normal approximation of `|D| > max(tolerance, c SE)` "
        "at the mean c.",
        "",
        "| scenario | seeds | pair check fails | theory | caught | elsewhere | gate fails | family | c | s per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seeds, t, theory in rows:
        lines.append(
            f"| {name} | {seeds} | {_ci(t.target, seeds)} | {theory} | {_ci(t.caught, seeds)} | "
            f"{_ci(t.other, seeds)} | "
            f"{_ci(t.overall, seeds)} | {t.family / seeds:.0f} | {t.critical / seeds:.2f} | {t.seconds / seeds:.2f} |"
        )
    lines += [
        "",
        "Requirements (issue: release-worthy models): (a) a fair model fails the **whole gate** at most 5% of the "
        "time at the real audit's shape (`gate fails` of the no-gap rows); (b) a 5 pp under-triage gap between "
        "two groups of 2,000 is caught at least 90% of the time (`caught`, and the stricter `pair check fails`, "
        "of the 5 pp rows).",
        "",
        "The real-shape simulation: "
        + "; ".join(f"{a} {', '.join(f'{g} {n:,}' for g, n in s.items())}" for a, s in REAL_SIZES.items())
        + "; intersection sex x age band; admission rate by age band "
        + ", ".join(f"{g} {p:.1%}" for g, p in REAL_ADMIT.items())
        + f"; true levels 1-5 with shares {', '.join(f'{p:g}' for p in REAL_LEVEL_P)}; under-triage "
        f"{HIGH_ACUITY_UNDER:.0%} at true levels 1-2 and {OTHER_UNDER:.0%} at 3-4 (the 5 pp gap: extra "
        "at 3-4 in 45-64). Attributes are independent.",
        "",
        f"Total runtime {total:.0f} s on this machine (2 shared cores; run under `nice`).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    logger.info("wrote %s in %.0f s", args.out, total)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
