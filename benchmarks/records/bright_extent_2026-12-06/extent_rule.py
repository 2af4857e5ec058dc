"""Bright clusters thin across slices: a render rule measured on served-path dumps (bright_gate_2026-12-05/
dump_cases.py: synthesis, probability, tissue prior, brain, lesion, true DWI, CT per phantom).

Rule (extent E slices): every 26-connected cluster of brain brighter than 1.3 x the synthesis's brain median that
spans at most E slices is set back to min(synthesis, tissue prior). E = 0 is the synthesis as served. Scored as the
lesion audit scores (metrics.lesion_metrics, qualifying as #18 counts). Slices are 5 mm here (the phantoms').

    python extent_rule.py DUMP_DIR E[,E...] > OUT.md      (E = 0 is always included as the reference)
"""
import glob
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from compare_models import t_ci  # noqa: E402

from jmmda_model import metrics  # noqa: E402


def apply_rule(y, brain, prior, extent):
    """The synthesis with thin bright clusters set back; returns (image, mL set back's voxel count)."""
    if extent <= 0:
        return y, 0
    b = brain > 0
    med = float(np.median(y[b]))
    lab, n = ndi.label(b & (y > metrics.SHOWN_RATIO * med), np.ones((3, 3, 3), bool))
    if n == 0:
        return y, 0
    thin = np.zeros(n + 1, bool)
    thin[1:] = [o[0].stop - o[0].start <= extent for o in ndi.find_objects(lab)]
    m = thin[lab]
    out = y.copy()
    out[m] = np.minimum(out[m], prior[m])
    return out, int(m.sum())


def score(y, d):
    b = d["brain"] > 0
    m = metrics.lesion_metrics(y, d["dwi"], b, d["lesion"], ct_hu=d["ct"], spacing=d["spacing"])
    les = m["lesions"]
    q = [L for L in les if metrics.qualifying(L)]
    return {"fb": m["false_bright_ml"], "psnr": metrics.psnr(y * b, d["dwi"] * b, b),
            "q": len(q), "q_shown": sum(L["shown"] for L in q), "q_darker": sum(L["darker"] for L in q),
            "all": len(les), "all_shown": sum(L["shown"] for L in les), "darker": sum(L["darker"] for L in les),
            "shown_flags": [L["shown"] for L in les]}


def main():
    folder, extents = Path(sys.argv[1]), [0] + [int(e) for e in sys.argv[2].split(",") if int(e) > 0]
    files = sorted(glob.glob(str(folder / "case_*.npz")))
    rows = {e: [] for e in extents}
    for f in files:
        d = dict(np.load(f))
        vox_ml = float(np.prod(d["spacing"])) / 1000.0
        for e in extents:
            y, nset = apply_rule(d["y"], d["brain"], d["prior"], e)
            s = score(y, d)
            s["set_back_ml"] = nset * vox_ml
            rows[e].append(s)
    print(f"{len(files)} phantoms from {folder.name} ({Path(files[0]).stem}..{Path(files[-1]).stem})\n")
    print("| rule | false-bright mL/case | in-brain PSNR dB | the issue's lesions shown | qualifying darker | "
          "all lesions shown | all darker | set back mL/case | lesions shown before, not after |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref = rows[0]
    for e in extents:
        r = rows[e]
        lost = sum(a and not b for r0, r1 in zip(ref, r) for a, b in zip(r0["shown_flags"], r1["shown_flags"]))
        name = "as served" if e == 0 else f"clusters <= {e} slice{'s' if e > 1 else ''} set back"
        print(f"| {name} | {np.mean([x['fb'] for x in r]):.1f} | {np.mean([x['psnr'] for x in r]):.2f} | "
              f"{sum(x['q_shown'] for x in r)} / {sum(x['q'] for x in r)} | {sum(x['q_darker'] for x in r)} | "
              f"{sum(x['all_shown'] for x in r)} / {sum(x['all'] for x in r)} | {sum(x['darker'] for x in r)} | "
              f"{np.mean([x['set_back_ml'] for x in r]):.1f} | {lost} |")
    print()
    for e in extents[1:]:
        for k, unit in (("fb", "mL/case"), ("psnr", "dB"), ("q_shown", "qualifying lesions shown per case")):
            m, lo, hi = t_ci(np.array([b[k] - a[k] for a, b in zip(ref, rows[e])], float))
            print(f"- <= {e} slices minus as served, {k}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] {unit}")
    print()


if __name__ == "__main__":
    main()
