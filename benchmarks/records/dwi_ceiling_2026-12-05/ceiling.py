#!/usr/bin/env python
"""How much of the phantoms' DWI can any synthesis from CT reach? Oracle predictors beside the lookup table.

    .venv/bin/python benchmarks/records/dwi_ceiling_2026-12-05/ceiling.py 30000:30060 runs/ceiling_a.jsonl
    .venv/bin/python benchmarks/records/dwi_ceiling_2026-12-05/ceiling.py --summary runs/ceiling_a.jsonl runs/ceiling_b.jsonl

Each test phantom (the audit's seeds, built as ``lesion_audit.py`` builds them) is drawn again with fewer of the
DWI's acquisition effects (``PhantomConfig.dwi_effects``: the same head, the same random draws). Each such image,
normalised like a model's output (its in-brain median -> 0.25, clipped to [0, 1]; also with the one gain per case
that fits the truth best, an optimistic figure), is scored against the real (full) DWI exactly as the audit scores
a synthesis: in-brain PSNR, false-bright mL, the issue's lesions shown and darker. Arms:

* ``clean``: everything but the Rician noise (knows the bias field and the EPI distortion: no CT does);
* ``no_bias``: no noise, no bias field;
* ``anatomy``: no noise, bias, EPI distortion or susceptibility loss: the head's anatomy, lesions and this
  case's tissue signals, perfectly (more than a CT holds: the phantoms draw the DWI tissue signals
  independently of the CT's HU);
* ``anatomy_pop``: as ``anatomy`` with the population's mean tissue signals (GM 1.0, WM 0.81, CSF 0.21, the
  middle of the generator's ranges): a CT-only predictor that knew the anatomy and every lesion perfectly;
* ``table``: the shipped demo's own lookup table (as the audit computes it; checks the pairing).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

ARMS = {
    "clean": {"dwi_effects": ("susceptibility", "epi", "bias")},
    "no_bias": {"dwi_effects": ("susceptibility", "epi")},
    "anatomy": {"dwi_effects": ()},
    "anatomy_pop": {"dwi_effects": (), "dwi_tissue": (1.0, 0.81, 0.21)},
}
MODEL = ROOT / "apps/ct2dwi/model/jmmda_demo.pt"


def axial(a):  # as phantom.loaded_case: (x, y, z) -> (z, y, x), x and y reversed (direction diag(-1, -1, 1))
    return np.ascontiguousarray(a.transpose(2, 1, 0)[:, ::-1, ::-1])


def score(pred, lc) -> dict:
    from jmmda_model.metrics import lesion_metrics, psnr, qualifying

    les = lesion_metrics(pred, lc.dwi, lc.brain, lc.lesion, lc.ct_hu, lc.spacing_zyx)
    q = [x for x in les["lesions"] if qualifying(x)]
    return {"psnr_brain": psnr(pred, lc.dwi, lc.brain), "false_bright_ml": les["false_bright_ml"],
            "qualifying": len(q), "shown": sum(x["shown"] for x in q), "darker_qualifying": sum(x["darker"] for x in q),
            "lesions": len(les["lesions"]), "darker": sum(x["darker"] for x in les["lesions"])}


def pending_cases(seeds, out: Path):
    """(seed, test phantom as the audit builds it, the shipped demo's table) for every seed not yet written to
    ``out`` (one JSON line per finished case: an interrupted run goes on from there)."""
    import torch

    from jmmda_model.phantom import loaded_case
    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.prior import TissuePrior

    torch.set_num_threads(1)
    table = TissuePrior.from_dict(torch.load(MODEL, map_location="cpu", weights_only=False)["preprocess"]["tissue_prior"])
    pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
    done = {json.loads(x)["case"] for x in out.read_text().splitlines() if x.strip()} if out.exists() else set()
    for s in seeds:
        if f"phantom_{s:03d}" not in done:
            yield s, loaded_case(s, pre), table


def run(seeds, out: Path) -> None:
    import dataclasses

    from jmmda_model.phantom import PhantomConfig, make_case

    t0 = time.time()
    for s, lc, table in pending_cases(seeds, out):
        b = lc.brain > 0
        row = {"case": lc.id, "ct_noise_hu": lc.meta["ct_noise_hu"]}
        t = table.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu) * b
        row["table"] = score(t, lc)
        for arm, kw in ARMS.items():
            c = make_case(s, dataclasses.replace(PhantomConfig(), **kw))
            assert np.array_equal(axial(c["ct"]), lc.ct_hu) and np.array_equal(axial(c["lesion"]), lc.lesion)
            raw = axial(c["dwi"]).astype(np.float64)
            own = np.clip(raw / np.median(raw[b]) * 0.25, 0.0, 1.0) * b
            gain = float((own[b] * lc.dwi[b]).sum() / (own[b] ** 2).sum())
            row[arm] = score(own, lc)
            row[arm + "_best_gain"] = {**score(np.clip(own * gain, 0.0, 1.0) * b, lc), "gain": gain}
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{lc.id}: table {row['table']['psnr_brain']:.2f} dB, anatomy_pop {row['anatomy_pop']['psnr_brain']:.2f}, "
              f"clean {row['clean']['psnr_brain']:.2f} ({time.time() - t0:.0f} s)", flush=True)


def summary(paths) -> str:
    from scipy import stats

    rows = [json.loads(x) for p in paths for x in Path(p).read_text().splitlines() if x.strip()]
    n = len(rows)
    arms = ["table", *[a for k in ARMS for a in (k, k + "_best_gain")]]
    demo = {}
    for half in ("a", "b"):  # the shipped demo's own audit on the same phantoms (record audit_demo_candidate_...)
        p = ROOT / "benchmarks/records/audit_demo_candidate_2026-12-05" / half / "cases.jsonl"
        for x in p.read_text().splitlines():
            c = json.loads(x)
            demo[c["case"]] = c
    lines = [f"{n} test phantoms ({rows[0]['case']} ..), in-brain figures against the real DWI, as the audit scores them.",
             "PSNR: mean over cases; difference from the table paired per case with its 95 % t interval.", "",
             "| predictor | in-brain PSNR dB | minus the table (95 % CI) | false-bright mL/case | issue's lesions shown | "
             "qualifying darker | all lesions darker |", "|---|---|---|---|---|---|---|"]
    tq = stats.t.ppf(0.975, n - 1)

    def line(name, vals_psnr, fb, shown, q, dq, dall, nall):
        d = vals_psnr - np.array([r["table"]["psnr_brain"] for r in rows])
        h = tq * d.std(ddof=1) / math.sqrt(n)
        lines.append(f"| {name} | {vals_psnr.mean():.2f} | {d.mean():+.2f} [{d.mean() - h:+.2f}, {d.mean() + h:+.2f}] | "
                     f"{fb:.1f} | {shown} / {q} | {dq} | {dall} / {nall} |")

    if all(r["case"] in demo for r in rows):
        dm = [demo[r["case"]] for r in rows]
        check = max(abs(d["table"]["psnr_brain"] - r["table"]["psnr_brain"]) for d, r in zip(dm, rows))
        q = [x for d in dm for x in d["lesions"] if x["qualifying"]]
        line("shipped demo (its audit)", np.array([d["psnr_brain"] for d in dm]),
             np.mean([d["false_bright_ml"] for d in dm]), sum(x["shown"] for x in q), len(q),
             sum(x["darker"] for x in q), sum(x["darker"] for d in dm for x in d["lesions"]),
             sum(len(d["lesions"]) for d in dm))
    else:
        check = None
    for arm in arms:
        v = [r[arm] for r in rows]
        line(arm, np.array([x["psnr_brain"] for x in v]), np.mean([x["false_bright_ml"] for x in v]),
             sum(x["shown"] for x in v), sum(x["qualifying"] for x in v), sum(x["darker_qualifying"] for x in v),
             sum(x["darker"] for x in v), sum(x["lesions"] for x in v))
    target = np.mean([r["table"]["psnr_brain"] for r in rows]) + 1.0
    lines += ["", f"The issue's PSNR target (the table + 1 dB): {target:.2f} dB on these cases."]
    if check is not None:
        lines.append(f"Pairing check: the table here and in the demo's audit differ by at most {check:.2e} dB per case.")
    gains = [r["anatomy_pop_best_gain"]["gain"] for r in rows]
    lines.append(f"anatomy_pop's best gain per case: median {np.median(gains):.3f} (range {min(gains):.3f}-{max(gains):.3f}).")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        print(summary(sys.argv[2:]))
    else:
        first, end = (int(v) for v in sys.argv[1].split(":"))
        run(range(first, end), Path(sys.argv[2]))
