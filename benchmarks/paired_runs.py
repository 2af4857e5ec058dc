#!/usr/bin/env python
"""Paired comparison of two recipes or two models on the same test phantoms, with 95 % confidence intervals.

    python benchmarks/paired_runs.py curves --a benchmarks/records/cpu_ema_2026-11-30 --b runs/curves_lift \
        [--arm jmmda] [--step 1000] [--out runs/lift_vs_plain.json]
    python benchmarks/paired_runs.py models --a OLD.pt --b NEW.pt [--test-cases 24] [--phantoms PKL] [--out runs/ab.json]
    python benchmarks/paired_runs.py audits --a AUDIT_A_S0,AUDIT_A_S1 --b AUDIT_B_S0,AUDIT_B_S1 [--out runs/ab.json]

``curves``: two learning-curve runs (``learning_curves.py`` folders or their records) of one arm (or two arms:
``--arm-b``); the evaluations
at the same step of the same seeds are paired case by case (each seed trained on the same phantoms, tested on
the same 24 test phantoms), so a difference is the recipe's, not the draw's. Raw-weight figures exist per seed only.
``models``: two checkpoints evaluated through the served path (``Synthesizer.predict_volume``: canonical pose,
mirror, prior) on the benchmark's test phantoms (seeds 30000..), never used to train either.
``audits``: two sets of ``lesion_audit.py`` folders (e.g. one per seed of two recipes), paired folder by folder and
case by case; also the issue's lesions shown by both, by A only and by B only.

Per case: in-brain PSNR, false-bright mL, qualifying lesions shown, lesions darker than normal (all and
qualifying). The interval is the paired t interval of B - A over cases (and seeds); one containing 0 is a tie.
For two recipes (``curves``, ``audits``) that interval speaks of these checkpoints only: every case of one seed's
checkpoint shares that checkpoint's draw (on this CPU the false-bright volume swings by tens of mL between
evaluations of one run), so it understates how much the recipe's outcome varies. Those comparisons therefore also
give the interval over seeds (the paired t interval of the seeds' mean differences, n - 1 degrees of freedom), and
the recipe verdict is taken from it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning_curves as lcb

KEYS = ("psnr_brain", "false_bright_ml", "shown", "darker", "darker_qualifying")
LABEL = {"psnr_brain": "in-brain PSNR dB", "false_bright_ml": "false-bright mL/case",
         "shown": "qualifying lesions shown per case", "darker": "lesions darker than normal per case",
         "darker_qualifying": "qualifying lesions darker per case"}


def _curve(folder: Path, arm: str, seed: int) -> dict | None:
    for f in (folder / f"{arm}_s{seed}" / "curve.json", folder / f"{arm}_s{seed}.json"):
        if f.exists():
            return json.loads(f.read_text())
    return None


def _point(curve: dict, step: int | None) -> dict | None:
    pts = [p for p in curve["points"] if step is None or p["step"] == step]
    return pts[-1] if pts else None


def _mean_point(curve: dict, steps: list[int]) -> dict:
    """A point whose per-case figures (and summary figures) are the means over the evaluations at ``steps``."""
    pts = [p for p in curve["points"] if p["step"] in steps]
    cases = [c["case"] for c in pts[0]["per_case"]]
    by = [{c["case"]: c for c in p["per_case"]} for p in pts]
    per_case = [{"case": name, **{k: float(np.mean([b[name][k] for b in by])) for k in KEYS}} for name in cases]
    mean = lambda src: {k: float(np.mean([s[k] for s in src])) for k in lcb.RAW_KEYS if all(k in s for s in src)}
    out = {"per_case": per_case, **mean(pts)}
    raws = [p.get("raw") for p in pts]
    if all(raws):
        out["raw"] = mean(raws)
    return out


def _summary(point: dict, raw: bool = False) -> dict | None:
    """The point's figures (``raw``: those of the raw weights, when the run scored them)."""
    src = point.get("raw") if raw else point
    return None if src is None else {k: src[k] for k in lcb.RAW_KEYS if k in src}


def pair_cases(a_cases: list[dict], b_cases: list[dict]) -> dict:
    """{key: (mean A, mean B, (diff, lo, hi), n)} over the cases both hold."""
    b_by = {c["case"]: c for c in b_cases}
    pairs = [(c, b_by[c["case"]]) for c in a_cases if c["case"] in b_by]
    out = {}
    for k in KEYS:
        a = [p[0][k] for p in pairs]
        b = [p[1][k] for p in pairs]
        out[k] = (float(np.mean(a)), float(np.mean(b)), lcb.paired_ci(b, a), len(pairs))
    return out


def _verdict(k: str, d: float, lo: float, hi: float, name_a: str, name_b: str) -> str:
    if not np.isfinite(lo):
        return "undecided (too few pairs)"
    if lo <= 0 <= hi:
        return "tie"
    better = (d > 0) == (k in ("psnr_brain", "shown"))
    return f"{name_b if better else name_a} better"


def table(rows: dict, name_a: str, name_b: str, by_seed: dict | None = None) -> str:
    """The paired rows as markdown; with ``by_seed`` (two recipes) also the interval over seeds, whose verdict is the
    recipe's, beside the verdict for these checkpoints."""
    if by_seed is None:
        lines = [f"| per case | {name_a} | {name_b} | {name_b} - {name_a} (95 % CI) | verdict |", "|---|---|---|---|---|"]
    else:
        lines = [f"| per case | {name_a} | {name_b} | {name_b} - {name_a}, over cases (95 % CI) | these runs "
                 f"| over seeds (95 % CI) | recipe verdict |", "|---|---|---|---|---|---|---|"]
    for k, (ma, mb, (d, lo, hi), n) in rows.items():
        row = f"| {LABEL[k]} (n = {n}) | {ma:.2f} | {mb:.2f} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] | {_verdict(k, d, lo, hi, name_a, name_b)} |"
        if by_seed is not None:
            sd, slo, shi, ns = by_seed[k]
            row += (f" {sd:+.2f} [{slo:+.2f}, {shi:+.2f}] (n = {ns}) | {_verdict(k, sd, slo, shi, name_a, name_b)} |")
        lines.append(row)
    return "\n".join(lines)


def cmd_curves(a) -> dict:
    fa, fb = Path(a.a), Path(a.b)
    cases_a, cases_b, per_seed = [], [], []
    for seed in [int(s) for s in a.seeds.split(",")]:
        ca, cb = _curve(fa, a.arm, seed), _curve(fb, a.arm_b or a.arm, seed)
        if ca is None or cb is None:
            continue
        common = sorted({p["step"] for p in ca["points"]} & {p["step"] for p in cb["points"]})
        if a.mean_over_steps:
            if a.step is not None:
                raise SystemExit("--step and --mean-over-steps exclude each other")
            steps = [t for t in common if t >= a.from_step]
            if not steps:
                continue
            pa, pb = _mean_point(ca, steps), _mean_point(cb, steps)
            step = f"{steps[0]}-{steps[-1]} ({len(steps)} evaluations)"
        else:
            step = a.step if a.step is not None else (common[-1] if common else None)  # default: the last both reached
            pa, pb = _point(ca, step), _point(cb, step)
        if pa is None or pb is None:
            continue
        cases_a += [{**c, "case": f"s{seed}/{c['case']}"} for c in pa["per_case"]]
        cases_b += [{**c, "case": f"s{seed}/{c['case']}"} for c in pb["per_case"]]
        per_seed.append({"seed": seed, "step": step, "avg_a": _summary(pa), "avg_b": _summary(pb),
                         "raw_a": _summary(pa, raw=True), "raw_b": _summary(pb, raw=True)})
    if not cases_a:
        raise SystemExit(f"no seed of arms {a.arm!r} / {a.arm_b or a.arm!r} evaluated at a common step in {fa} and {fb}")
    rows, by_seed = pair_cases(cases_a, cases_b), lcb.pair_by_seed(cases_a, cases_b, KEYS)
    arms = a.arm if not a.arm_b or a.arm_b == a.arm else f"A {a.arm} vs B {a.arm_b}"
    md = (f"Arm {arms}, seeds {[s['seed'] for s in per_seed]}, step {[s['step'] for s in per_seed]}: A = {fa}, B = {fb} "
          f"(exported/averaged weights; pairs = seed x test case)\n\n" + table(rows, "A", "B", by_seed))
    raw = [s for s in per_seed if s["raw_a"] and s["raw_b"]]
    if raw:
        md += "\n\nRaw weights, per seed (A -> B): " + "; ".join(
            f"s{s['seed']}: PSNR {s['raw_a']['psnr_brain']:.2f} -> {s['raw_b']['psnr_brain']:.2f}, false-bright "
            f"{s['raw_a']['false_bright_ml']:.1f} -> {s['raw_b']['false_bright_ml']:.1f} mL, shown "
            f"{s['raw_a']['qualifying_sensitivity']:.2f} -> {s['raw_b']['qualifying_sensitivity']:.2f}, darker "
            f"{s['raw_a']['darker']} -> {s['raw_b']['darker']} ({s['raw_a']['darker_qualifying']} -> "
            f"{s['raw_b']['darker_qualifying']} qualifying)" for s in raw)
    return {"kind": "curves", "a": str(fa), "b": str(fb), "arm": a.arm, "arm_b": a.arm_b or a.arm, "per_seed": per_seed, "paired": rows,
            "paired_by_seed": by_seed, "markdown": md}


def evaluate_model(path: str, test) -> dict:
    from jmmda_model.inference import Synthesizer

    syn = Synthesizer(path, device="cpu")

    def pred(lc):
        y, lg, _ = syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
        return y, lg

    return lcb.evaluate(pred, test, with_prob=syn.probability if syn.has_probability else None)


def cmd_models(a) -> dict:
    from jmmda_model.preprocess import PreprocessConfig

    if a.phantoms:  # a learning-curve run's phantom file: (train, calibration, test) built with the same seeds
        import pickle

        with open(a.phantoms, "rb") as f:
            test = pickle.load(f)[2][: a.test_cases]
        if [lc.id for lc in test] != [f"phantom_{s}" for s in range(lcb.TEST_SEED0, lcb.TEST_SEED0 + a.test_cases)]:
            raise SystemExit(f"{a.phantoms} does not hold test phantoms {lcb.TEST_SEED0}..: build them instead")
    else:
        test = lcb.make_cases(range(lcb.TEST_SEED0, lcb.TEST_SEED0 + a.test_cases), PreprocessConfig(), a.workers)
    ra, rb = evaluate_model(a.a, test), evaluate_model(a.b, test)
    rows = pair_cases(ra["per_case"], rb["per_case"])
    summ = lambda r: (f"qualifying shown {r['qualifying_sensitivity']:.2f} of {r['qualifying_lesions']}, darker "
                      f"{r['darker']} ({r['darker_qualifying']} qualifying) of {r['lesions']}, false-bright "
                      f"{r['false_bright_ml']:.1f} mL/case, PSNR {r['psnr_brain']:.2f} dB"
                      + (f", prob. ECE {r['prob_ece']:.3f}, sens. at <= 2 FP/case "
                         f"{r['prob_froc_2fp']['sensitivity']:.2f} (qualifying lesions "
                         f"{r['prob_froc_2fp_qualifying']['sensitivity']:.2f})" if "prob_ece" in r else ""))
    md = (f"{a.test_cases} test phantoms (seeds {lcb.TEST_SEED0}..), served path.\n\nA = {a.a}: {summ(ra)}\n\n"
          f"B = {a.b}: {summ(rb)}\n\n" + table(rows, "A", "B"))
    strip = lambda r: {k: v for k, v in r.items() if k != "reliability"}
    return {"kind": "models", "a": a.a, "b": a.b, "A": strip(ra), "B": strip(rb), "paired": rows, "markdown": md}


def _audit_cases(folder: Path) -> list[dict]:
    path = folder / "cases.jsonl"
    if not path.exists():
        raise SystemExit(f"{folder}: no cases.jsonl (not a lesion_audit.py folder)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cmd_audits(a) -> dict:
    """Two sets of lesion audits (``lesion_audit.py`` folders), the i-th of A paired with the i-th of B (the same
    seed of two recipes), case by case and lesion by lesion (the same phantoms: the same lesions, in the same
    order)."""
    fa, fb = [Path(x) for x in a.a.split(",")], [Path(x) for x in a.b.split(",")]
    if len(fa) != len(fb):
        raise SystemExit(f"--a names {len(fa)} audits and --b {len(fb)}: pair them one to one")
    cases_a, cases_b, both, only_a, only_b, deep = [], [], 0, 0, 0, [0, 0, 0]
    for i, (da, db) in enumerate(zip(fa, fb)):
        ra, rb = {c["case"]: c for c in _audit_cases(da)}, {c["case"]: c for c in _audit_cases(db)}
        for name in sorted(set(ra) & set(rb)):
            ca, cb = ra[name], rb[name]
            if len(ca["lesions"]) != len(cb["lesions"]):
                raise SystemExit(f"{name}: {da} and {db} hold different lesions (other phantoms?)")
            for c, out in ((ca, cases_a), (cb, cases_b)):
                q = [x for x in c["lesions"] if x["qualifying"]]
                out.append({"case": f"{i}/{name}", "psnr_brain": c["psnr_brain"], "false_bright_ml": c["false_bright_ml"],
                            "shown": sum(x["shown"] for x in q), "darker": sum(x["darker"] for x in c["lesions"]),
                            "darker_qualifying": sum(x["darker"] for x in q)})
            for xa, xb in zip(ca["lesions"], cb["lesions"]):
                if not xa["qualifying"]:
                    continue
                both += xa["shown"] and xb["shown"]
                only_a += xa["shown"] and not xb["shown"]
                only_b += xb["shown"] and not xa["shown"]
                if xa["mirror_diff_hu"] < -12.0:  # more than the default prior lift below the mirror
                    deep = [deep[0] + 1, deep[1] + xa["shown"], deep[2] + xb["shown"]]
    if not cases_a:
        raise SystemExit("the audits share no case")
    rows, by_seed = pair_cases(cases_a, cases_b), lcb.pair_by_seed(cases_a, cases_b, KEYS)
    md = (f"A = {', '.join(map(str, fa))}; B = {', '.join(map(str, fb))} (pairs = audit pair x test case, "
          f"{len(cases_a)} in all)\n\n" + table(rows, "A", "B", by_seed)
          + f"\n\nQualifying lesions, pair by pair: shown by both {both}, by A only {only_a}, by B only {only_b}"
          + f"; of those more than 12 HU below their mirror ({deep[0]}): A shows {deep[1]}, B {deep[2]}.")
    return {"kind": "audits", "a": [str(x) for x in fa], "b": [str(x) for x in fb], "paired": rows, "paired_by_seed": by_seed,
            "qualifying_discordant": {"both": both, "a_only": only_a, "b_only": only_b},
            "below_mirror_12hu": {"n": deep[0], "a_shown": deep[1], "b_shown": deep[2]}, "markdown": md}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curves", help="two learning-curve runs of one arm, paired by seed and test case")
    c.add_argument("--a", required=True)
    c.add_argument("--b", required=True)
    c.add_argument("--arm", default="jmmda")
    c.add_argument("--arm-b", default=None, help="B's arm when it differs (e.g. pix2pix against jmmda)")
    c.add_argument("--seeds", default="0,1,2")
    c.add_argument("--step", type=int, default=None, help="the evaluation step (default: the last both reached)")
    c.add_argument("--mean-over-steps", action="store_true",
                   help="instead of one step: each case's figures averaged over every evaluation both runs reached "
                        "(from --from-step), then paired - the recipe over its course, not one point of its swing")
    c.add_argument("--from-step", type=int, default=0, help="with --mean-over-steps: the first step counted")
    m = sub.add_parser("models", help="two checkpoints on the benchmark's test phantoms, served path")
    m.add_argument("--a", required=True)
    m.add_argument("--b", required=True)
    m.add_argument("--test-cases", type=int, default=24)
    m.add_argument("--workers", type=int, default=1)
    m.add_argument("--phantoms", default=None, help="take the test phantoms from a learning-curve run's phantoms_*.pkl")
    u = sub.add_parser("audits", help="lesion audits (lesion_audit.py folders) of two recipes, seed by seed")
    u.add_argument("--a", required=True, help="comma-separated audit folders (one per seed)")
    u.add_argument("--b", required=True, help="the same number of folders, in the same seed order")
    for s in (c, m, u):
        s.add_argument("--out", default=None, help="write the comparison as JSON here")
    a = p.parse_args(argv)
    res = {"curves": cmd_curves, "models": cmd_models, "audits": cmd_audits}[a.cmd](a)
    print(res["markdown"])
    if a.out:
        from jmmda_model.checkpoint import write_json_atomic

        write_json_atomic(res, Path(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
