#!/usr/bin/env python
"""The infarct-probability map on thin slices: the same phantoms and arms as thin_vs_slab.py, lesion-wise (FROC at
the model's operating point, the lesions #18 counts) and calibration (pooled ECE), on the 1 mm grid.

    python prob_thin_vs_slab.py MODEL FIRST:END OUT.jsonl     (one JSON row per phantom; resumable)
    python prob_thin_vs_slab.py --summary OUT.jsonl THRESHOLD
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import thin_vs_slab as t  # noqa: E402


def summary(path: Path, threshold: float) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"{len(rows)} phantoms ({rows[0]['seed']}..{rows[-1]['seed']}), 1 mm grid, threshold {threshold:g}\n")
    print("| arm | the issue's lesions found | all lesions found | false-positive clusters (>= 0.5 mL) per case | pooled ECE "
          "| best within <= 2 FP/case, the issue's lesions (threshold, FP/case) |")
    print("|---|---|---|---|---|---|")
    for arm in ("direct", "slabs"):
        per_case = [r[arm] for r in rows]
        i = [round(f["threshold"], 6) for f in per_case[0]["froc"]].index(round(threshold, 6))
        found_q = [d for m in per_case for d, c in zip(m["froc"][i]["detected"], m["counted"]) if c]
        found = [d for m in per_case for d in m["froc"][i]["detected"]]
        fp = np.mean([m["froc"][i]["fp"] for m in per_case])
        rel = t.metrics.pool_reliability(per_case)
        best = t.metrics.froc_summary(per_case, max_fp=2.0, counted_only=True)
        print(f"| {arm} | {sum(found_q)} / {len(found_q)} | {sum(found)} / {len(found)} | {fp:.2f} | "
              f"{t.metrics.ece_from_bins(rel):.3f} | {best['sensitivity']:.2f} ({best['threshold']}, {best['fp_per_case']}) |")


def main():
    if sys.argv[1] == "--summary":
        return summary(Path(sys.argv[2]), float(sys.argv[3]))
    model, out = sys.argv[1], Path(sys.argv[3])
    syn = t.Synthesizer(model, device="cpu")
    sp = (1.0, 1.8, 1.8)
    for seed in t.pending(sys.argv[2], out):
        c = t.thin_case(seed)
        ct, brain, lesion, dwi = c["ct"], c["brain"], c["lesion"], c["dwi"]
        n = ct.shape[0]
        _, lg_thin, _ = syn.predict_volume(ct, brain, sp)
        ct_s, brain_s = t.to_slabs(ct, t.blocks(len(ct))), t.slab_mask(brain, t.blocks(len(brain)))
        y_s, lg_s, _ = syn.predict_volume(ct_s, brain_s, (5.0, 1.8, 1.8))
        lg_back = t.from_slabs(lg_s, t.blocks(n))
        counted = [t.metrics.qualifying(L) for L in
                   t.metrics.lesion_metrics(t.from_slabs(y_s, t.blocks(n)), dwi, brain, lesion, ct_hu=ct, spacing=sp)["lesions"]]
        row = {"seed": seed}
        for arm, lg in (("direct", lg_thin), ("slabs", lg_back)):
            prob = syn.probability(lg) * (brain > 0)
            row[arm] = t.metrics.probability_metrics(prob, lesion, brain, sp, counted=counted)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(seed, flush=True)


if __name__ == "__main__":
    main()
