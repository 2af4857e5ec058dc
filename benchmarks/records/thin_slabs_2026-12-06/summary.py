"""Summarises thin_vs_slab.py rows: per grid, each arm's means and the slab path minus the direct path, paired over
the phantoms (t interval, benchmarks/compare_models.t_ci).

    python summary.py ROWS.jsonl > summary.md
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from compare_models import t_ci  # noqa: E402

rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
print(f"{len(rows)} phantoms (seeds {rows[0]['seed']}..{rows[-1]['seed']}), CT noise "
      f"{min(r['ct_noise_hu'] for r in rows):.1f}-{max(r['ct_noise_hu'] for r in rows):.1f} HU; network seconds per "
      f"case (this CPU, shared): thin {np.mean([r['net_s']['thin'] for r in rows]):.1f}, slabs "
      f"{np.mean([r['net_s']['slabs'] for r in rows]):.1f}\n")
for grid, title in (("thin_grid", "1 mm slices, against the 1 mm true DWI"),
                    ("slab_grid", "5 mm slabs, against the true DWI averaged the same way")):
    print(f"## {title}\n")
    print("| arm | in-brain PSNR dB | the table's PSNR dB | false-bright mL/case | qualifying lesions shown | "
          "qualifying darker | darker (all lesions) | superpixel r |")
    print("|---|---|---|---|---|---|---|---|")
    for arm, name in (("direct", "each thin slice through the network (before)"), ("slabs", "5 mm slabs, interpolated back")):
        v = lambda k: [r[grid][arm][k] for r in rows]  # noqa: E731
        print(f"| {name} | {np.mean(v('psnr_brain')):.2f} | {np.mean(v('table_psnr_brain')):.2f} | "
              f"{np.mean(v('false_bright_ml')):.1f} | {sum(v('qualifying_shown'))} / {sum(v('qualifying'))} | "
              f"{sum(v('qualifying_darker'))} | {sum(v('darker'))} / {sum(v('lesions'))} | {np.mean(v('superpixel_r')):.3f} |")
    print()
    for k, unit in (("psnr_brain", "dB"), ("false_bright_ml", "mL/case"), ("superpixel_r", ""),
                    ("qualifying_shown", "lesions/case")):
        d = np.array([r[grid]["slabs"][k] - r[grid]["direct"][k] for r in rows], float)
        m, lo, hi = t_ci(d)
        print(f"- slabs minus direct, {k}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] {unit}")
    print()
