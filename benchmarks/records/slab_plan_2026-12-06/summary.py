"""Summarises plan_vs_blocks.py rows (each arm's means, and each candidate minus what it replaces, paired over the
phantoms: t interval, benchmarks/compare_models.t_ci) and thin_tilt.py rows (means per slice thickness and arm).

    python summary.py ROWS.jsonl [ROWS.jsonl ...] [--tilt TILT_ROWS.jsonl] > summary.md
    python summary.py --two-phase TWO_PHASE_ROWS.jsonl SHIFT_ROWS.jsonl > two_phase_summary.md
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from compare_models import t_ci  # noqa: E402

args = sys.argv[1:]
if args[0] == "--two-phase":  # two_phase.py rows: one slab layout against the mean of two, half a slab apart
    from jmmda_model import metrics

    rows = [json.loads(line) for line in Path(args[1]).read_text().splitlines() if line.strip()]
    print(f"{len(rows)} thin phantoms (seeds {rows[0]['seed']}..{rows[-1]['seed']}), 1 mm grid, the shipped demo\n")
    for k, unit in (("false_bright_ml", "mL/case"), ("psnr_brain", "dB"), ("superpixel_r", ""),
                    ("qualifying_shown", "lesions/case"), ("qualifying_darker", "lesions/case"), ("darker", "lesions/case")):
        a, b = (np.array([r[f"phases_{n}"][k] for r in rows], float) for n in (1, 2))
        m, lo, hi = t_ci(b - a)
        print(f"- {k}: one layout {a.mean():.3f} (sum {a.sum():g}), two {b.mean():.3f} (sum {b.sum():g}); two minus one "
              f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] {unit}".rstrip())
    for n in (1, 2):
        per = [r[f"prob_{n}"] for r in rows]
        i = [round(f["threshold"], 6) for f in per[0]["froc"]].index(0.8)
        fq = [d for m in per for d, c in zip(m["froc"][i]["detected"], m["counted"]) if c]
        print(f"- probability map, {n} layout(s), at the demo's operating point 0.80: {sum(fq)} / {len(fq)} of the "
              f"issue's lesions, {np.mean([m['froc'][i]['fp'] for m in per]):.2f} false-positive clusters per case; "
              f"pooled ECE {metrics.ece_from_bins(metrics.pool_reliability(per)):.4f}")
    sh = [json.loads(line) for line in Path(args[2]).read_text().splitlines() if line.strip()]
    print(f"\nThe slab layout moved 1-4 mm along the head (a head moved between two scans), r (brain) against the "
          f"unmoved synthesis, {len(sh)} phantoms:\n")
    for n in (1, 2):
        v = np.array([r[f"slab_shift_r_{n}"] for r in sh])
        print(f"- {n} layout(s): {v.min():.3f}-{v.max():.3f} (mean {v.mean():.3f}); by mm moved: "
              + ", ".join(f"{x:.3f}" for x in v.mean(0)))
    sys.exit(0)
tilt = args[args.index("--tilt") + 1] if "--tilt" in args else None
files = [a for a in args if a != "--tilt" and a != tilt]
rows = sorted((json.loads(line) for f in files for line in Path(f).read_text().splitlines() if line.strip()),
              key=lambda r: r["seed"])
ARMS = [("1mm_blocks", "1 mm, 5 mm slabs of whole slices from the first (before)"),
        ("1mm_grid", "1 mm, 5 mm slabs in the patient's frame (now)"),
        ("2mm_before", "2 mm, two slices at a time into 4 mm slabs (before)"), ("2mm_slabs", "2 mm, 5 mm slabs"),
        ("3mm_before", "3 mm as they are (before)"), ("3mm_slabs", "3 mm, 5 mm slabs"),
        ("4mm_before", "4 mm as they are (before)"), ("4mm_slabs", "4 mm, 5 mm slabs")]
print(f"{len(rows)} phantoms (seeds {', '.join(str(r['seed']) for r in rows)}), each arm scored on the 1 mm grid "
      "against the 1 mm true DWI\n")
print("| arm | in-brain PSNR dB | the table's | false-bright mL/case | the issue's lesions shown | qualifying darker | "
      "darker (all lesions) | superpixel r |")
print("|---|---|---|---|---|---|---|---|")
for arm, name in ARMS:
    v = lambda k: [r[arm][k] for r in rows]  # noqa: E731
    print(f"| {name} | {np.mean(v('psnr_brain')):.2f} | {np.mean(v('table_psnr_brain')):.2f} | "
          f"{np.mean(v('false_bright_ml')):.1f} | {sum(v('qualifying_shown'))} / {sum(v('qualifying'))} | "
          f"{sum(v('qualifying_darker'))} | {sum(v('darker'))} / {sum(v('lesions'))} | {np.mean(v('superpixel_r')):.3f} |")
print()
for new, old in (("1mm_grid", "1mm_blocks"), ("2mm_slabs", "2mm_before"), ("3mm_slabs", "3mm_before"),
                 ("4mm_slabs", "4mm_before")):
    parts = []
    for k, unit in (("false_bright_ml", "mL"), ("psnr_brain", "dB"), ("superpixel_r", ""), ("qualifying_shown", "lesions/case")):
        m, lo, hi = t_ci(np.array([r[new][k] - r[old][k] for r in rows], float))
        parts.append(f"{k} {m:+.3f} [{lo:+.3f}, {hi:+.3f}] {unit}".rstrip())
    print(f"- {new} minus {old}: " + "; ".join(parts))
shifted = [r for r in rows if "z_shift_r_1mm_grid" in r]
if shifted:
    print(f"\nThe series without its first 1-4 slices, r (brain) against the whole series' synthesis ({len(shifted)} "
          "phantoms):\n")
    for arm in ("1mm_blocks", "1mm_grid"):
        rs = np.array([r[f"z_shift_r_{arm}"] for r in shifted])
        print(f"- {arm}: mean {rs.mean():.3f}, range {rs.min():.3f}-{rs.max():.3f}; by slices left out (1-4): "
              + ", ".join(f"{v:.3f}" for v in rs.mean(0)))
if tilt:
    t = [json.loads(line) for line in Path(tilt).read_text().splitlines() if line.strip()]
    print("\n15 degree gantry tilt (tests/test_pose.py's head, seeds as listed), means:\n")
    print("| slices | arm | seeds | r(tilted synthesis mapped back, untilted) | superpixel r untilted | tilted | drop |")
    print("|---|---|---|---|---|---|---|")
    for K in sorted({r["K_mm"] for r in t}):
        sel = [r for r in t if r["K_mm"] == K]
        for arm in ("direct", "served"):
            a = [r[arm] for r in sel if arm in r]
            if not a:
                continue
            rr, sc, st = (np.mean([x[k] for x in a]) for k in ("r_tilted_vs_centred", "superpixel_centred", "superpixel_tilted"))
            print(f"| {K} mm | {arm} | {','.join(str(r['seed']) for r in sel)} | {rr:.3f} (range "
                  f"{min(x['r_tilted_vs_centred'] for x in a):.3f}-{max(x['r_tilted_vs_centred'] for x in a):.3f}) | "
                  f"{sc:.3f} | {st:.3f} | {st - sc:+.3f} |")
