"""The recipe comparisons of 2026-12-04/05 again, with the interval over seeds beside the interval over cases
(benchmarks/paired_runs.py: the recipe verdict now comes from the seeds). From the committed records only:

    python benchmarks/records/seed_intervals_2026-12-05/recompare.py > benchmarks/records/seed_intervals_2026-12-05/recompare.md

Each comparison: the lifted-prior run of 2026-12-04 (A) against one change (B), 3 seeds x 24 test phantoms at step
1000 and averaged over the evaluations at steps 250-1000; and, where both were audited, 3 seeds x 120 phantoms.
"""
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
import paired_runs  # noqa: E402

R = ROOT / "benchmarks" / "records"
LIFT = R / "cpu_lift_2026-12-04"
CHANGES = {  # name: (curve record, audit folders or None)
    "learning rate 1e-4": (R / "cpu_lr1e4_2026-12-04", None),
    "adversarial weight 0.5": (R / "cpu_adv05_2026-12-04", None),
    "cosine learning rate": (R / "cpu_cos_2026-12-05", None),
    "prior lift 15 HU": (R / "cpu_lift15_2026-12-05", [R / "cpu_lift15_2026-12-05/audits" / f"lift15_s{s}" for s in range(3)]),
    "hard-negative crops 1/3": (R / "cpu_hn33_2026-12-05", [R / "cpu_hn33_2026-12-05/audits" / f"hn33_s{s}" for s in range(3)]),
}
for extra in sys.argv[1:]:  # name=curve_folder[,audit_s0,audit_s1,audit_s2]
    name, paths = extra.split("=", 1)
    parts = paths.split(",")
    CHANGES[name] = (Path(parts[0]), [Path(x) for x in parts[1:]] or None)
AUDIT_A = [R / "cpu_lift15_2026-12-05/audits" / f"lift10_s{s}" for s in range(3)]
KEYS = ("false_bright_ml", "psnr_brain", "shown")


def rows(res):
    out = []
    for k in KEYS:
        ma, mb, (d, lo, hi), n = res["paired"][k]
        sd, slo, shi, ns = res["paired_by_seed"][k]
        v_case = paired_runs._verdict(k, d, lo, hi, "A", "B")
        v_seed = paired_runs._verdict(k, sd, slo, shi, "A", "B")
        out.append(f"{paired_runs.LABEL[k]}: {d:+.2f} [{lo:+.2f}, {hi:+.2f}] over {n} cases ({v_case}); "
                   f"[{slo:+.2f}, {shi:+.2f}] over {ns} seeds ({v_seed})")
    return out


def cell(res, k, seeds):
    if res is None:
        return "-"
    if seeds:
        d, lo, hi, _ = res["paired_by_seed"][k]
    else:
        _, _, (d, lo, hi), _ = res["paired"][k]
    return f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}]" + ("" if lo <= 0 <= hi else " *")


print("# Recipe comparisons with the interval over seeds (B - A; A = lifted prior 10 HU, 2026-12-04)\n")
summary = {}
for name, (curves, audits) in CHANGES.items():
    print(f"## {name} ({curves.name})\n")
    base = dict(a=str(LIFT), b=str(curves), arm="jmmda", arm_b=None, seeds="0,1,2")
    for label, ns in (("curves at step 1000", dict(step=1000, mean_over_steps=False, from_step=0)),
                      ("curves averaged over steps 250-1000", dict(step=None, mean_over_steps=True, from_step=250))):
        res = paired_runs.cmd_curves(types.SimpleNamespace(**base, **ns))
        summary.setdefault(name, {})[label] = res
        print(f"- {label}:")
        for line in rows(res):
            print(f"  - {line}")
    if audits:
        res = paired_runs.cmd_audits(types.SimpleNamespace(a=",".join(map(str, AUDIT_A)), b=",".join(map(str, audits))))
        summary[name]["audits"] = res
        print("- audits, 120 test phantoms per seed (the selected checkpoints):")
        for line in rows(res):
            print(f"  - {line}")
    print()

print("## JMMDA (A) vs pix2pix (B) under the lifted-prior recipe (cpu_lift_2026-12-04)\n")
for label, ns in (("curves at step 1000", dict(step=1000, mean_over_steps=False, from_step=0)),
                  ("curves averaged over steps 250-1000", dict(step=None, mean_over_steps=True, from_step=250))):
    res = paired_runs.cmd_curves(types.SimpleNamespace(a=str(LIFT), b=str(LIFT), arm="jmmda", arm_b="pix2pix",
                                                       seeds="0,1,2", **ns))
    summary.setdefault("pix2pix instead of JMMDA", {})[label] = res
    print(f"- {label}:")
    for line in rows(res):
        print(f"  - {line}")
print()

for k in ("false_bright_ml", "psnr_brain"):
    print(f"\n### {paired_runs.LABEL[k]}, B - A (95 % CI; * = the interval excludes 0)\n")
    print("| change | step 1000, over cases | over seeds | steps 250-1000 averaged, over cases | over seeds "
          "| audits, over cases | over seeds |")
    print("|---|---|---|---|---|---|---|")
    for name, r in summary.items():
        c1, c2, au = r["curves at step 1000"], r["curves averaged over steps 250-1000"], r.get("audits")
        print(f"| {name} | {cell(c1, k, False)} | {cell(c1, k, True)} | {cell(c2, k, False)} | {cell(c2, k, True)} "
              f"| {cell(au, k, False)} | {cell(au, k, True)} |")
