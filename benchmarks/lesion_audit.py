#!/usr/bin/env python
"""Lesion audit of one model on many fresh test phantoms: which lesions it shows, which it misses, and why.

    python benchmarks/lesion_audit.py --model apps/ct2dwi/model/jmmda_demo.pt --seeds 30000:30120 --out runs/audit
    python benchmarks/lesion_audit.py --model A.pt B.pt C.pt ...     (an ensemble: the members' mean)
    python benchmarks/lesion_audit.py --flip-average ...             (each slice and its mirror image, averaged)

What it runs, exactly: phantoms built in memory (``jmmda_model.phantom.loaded_case``, 1.8 x 1.8 x 5 mm) from the
benchmark's test seeds (30000.., never used in any training: not by ``learning_curves.py``, not by
``train_demo.py``), each synthesised as ``jmmda infer`` computes it (``Synthesizer.predict_volume``: canonical pose,
hemispheric comparison), with the calibrated infarct probability. Per lesion (26-connected, as ``lesion_metrics``):
volume, CT contrast, real and synthetic lesion/normal ratio, shown (synthetic ratio >= 1.3), darker (< 1), mean and
maximum probability, height in the brain (0 = lowest brain slice, 1 = highest) and the mean CT-minus-mirror
difference. Per case: in-brain PSNR, false-bright mL, and how much of the false-bright volume has probability >= 0.5,
lies >= 10 mm inside the brain, and sits in clusters of >= 0.5 mL; and the spread (sd) of the smoothed
CT-minus-mirror difference over normal brain, by height band (how noisy the hemispheric cue is there).

Summary: the lesions the model issue counts (>= 1 mL, CT contrast >= 3 HU, real ratio >= 1.3) shown, with a 95 %
Wilson interval, and broken down by height band, volume and CT contrast; lesions darker than normal; false-bright
brain and its make-up. Resumable: each finished case is appended to ``<out>/cases.jsonl`` and skipped on a rerun
(with the same model and seeds; another model or seed range in the same folder is refused).
Output: ``<out>/cases.jsonl``, ``<out>/audit.json``, ``<out>/audit.md``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:  # as in learning_curves.py: the lent GPU machine may lack SimpleITK; the served path used here never calls it
    import SimpleITK  # noqa: F401
except ImportError:  # pragma: no cover - only there
    import types

    sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")

#: height bands (fraction of the brain's slice range) and the volume and CT-contrast bins of the breakdown
HEIGHT_BANDS = ((0.0, 0.15, "lowest 15 %"), (0.15, 0.85, "middle"), (0.85, 1.01, "highest 15 %"))
VOLUME_BANDS = ((1.0, 3.0, "1-3 mL"), (3.0, 10.0, "3-10 mL"), (10.0, math.inf, ">= 10 mL"))
CONTRAST_BANDS = ((3.0, 5.0, "3-5 HU"), (5.0, 8.0, "5-8 HU"), (8.0, math.inf, ">= 8 HU"))
DEEP_MM = 10.0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of k successes in n (nan, nan for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, c - h), min(1.0, c + h)


def band_of(v: float, bands) -> str | None:
    return next((name for lo, hi, name in bands if lo <= v < hi), None)


def audit_case(syn, lc) -> dict:
    """One loaded case through the served path: per-lesion rows and per-case figures."""
    from scipy import ndimage as ndi

    from jmmda_model.metrics import lesion_metrics, probability_metrics, psnr, qualifying

    y, logits, _ = syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
    b = lc.brain > 0
    y = y * b
    prob = syn.probability(logits) * b if logits is not None else np.zeros(b.shape, np.float32)
    les = lesion_metrics(y, lc.dwi, lc.brain, lc.lesion, lc.ct_hu, lc.spacing_zyx, masks=True)
    # the lesions, the normal brain and the false-bright brain as it counted them
    labels, normal, fb = les.pop("labels"), les.pop("normal_mask"), les.pop("false_bright_mask")
    full = np.ones((3, 3, 3), bool)
    zb = np.flatnonzero(b.any((1, 2)))
    height = (np.arange(b.shape[0]) - zb.min()) / max(int(zb.max() - zb.min()), 1)
    mirror = lc.mirror_hu if lc.mirror_hu is not None else lc.ct_hu
    diff = ndi.gaussian_filter(lc.ct_hu, (0, 1, 1)) - ndi.gaussian_filter(mirror, (0, 1, 1))
    rows = []
    for k, item in enumerate(les["lesions"], 1):
        region = labels == k
        rows.append({**{key: (round(v, 4) if isinstance(v, float) else v) for key, v in item.items()},
                     "qualifying": qualifying(item), "p_mean": round(float(prob[region].mean()), 4),
                     "p_max": round(float(prob[region].max()), 4),
                     "height": round(float(height[np.nonzero(region)[0]].mean()), 3),
                     "mirror_diff_hu": round(float(diff[region].mean()), 2)})
    # the probability map lesion-wise (FROC) and its calibration, the lesions flagged (same labelling)
    prob_metrics = (probability_metrics(prob, lc.lesion, lc.brain, lc.spacing_zyx,
                                        counted=[r["qualifying"] for r in rows]) if logits is not None else None)
    # what the false-bright brain is made of
    vox_ml = float(np.prod(lc.spacing_zyx)) / 1000.0
    depth = ndi.distance_transform_edt(b, sampling=lc.spacing_zyx)
    cl, n = ndi.label(fb, full)
    sizes = np.asarray(ndi.sum(fb, cl, range(1, n + 1))) * vox_ml if n else np.zeros(0)
    big = np.isin(cl, 1 + np.flatnonzero(sizes >= 0.5)) if n else np.zeros(b.shape, bool)
    quiet = normal & (lc.ct_hu > 15) & (lc.ct_hu < 60) & (mirror > 15) & (mirror < 60)
    spread = {}
    for lo, hi, name in HEIGHT_BANDS:
        zs = (height >= lo) & (height < hi)
        v = diff[zs][quiet[zs]]
        spread[name] = {"n": int(v.size), "sum": float(v.sum()), "sum2": float((v * v).sum())}
    table = None
    if syn.pre.tissue_prior is not None:  # the baseline beside the network: the checkpoint's own lookup table
        from jmmda_model.prior import TissuePrior

        t = TissuePrior.from_dict(syn.pre.tissue_prior).predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu) * b
        table = {"psnr_brain": psnr(t, lc.dwi, lc.brain),
                 "false_bright_ml": lesion_metrics(t, lc.dwi, lc.brain, lc.lesion, lc.ct_hu, lc.spacing_zyx)["false_bright_ml"]}
    return {"case": lc.id, "psnr_brain": psnr(y, lc.dwi, lc.brain), "false_bright_ml": les["false_bright_ml"],
            "table": table,
            "fb_prob_ge_0.5_ml": float((fb & (prob >= 0.5)).sum()) * vox_ml,
            "fb_deep_ml": float((fb & (depth >= DEEP_MM)).sum()) * vox_ml,
            "fb_in_clusters_ge_0.5ml_ml": float(big.sum()) * vox_ml,
            "mirror_diff_spread": spread, "probability": prob_metrics, "lesions": rows}


def probability_summary(cases: list[dict], max_fp: float = 2.0) -> dict | None:
    """The probability map over the cases (each with ``probability_metrics``' row under "probability"): pooled
    ECE, and per lesion set (the issue's lesions, all lesions) the best lesion-wise sensitivity at <= ``max_fp``
    false-positive clusters (>= 0.5 mL) per case with its threshold, and the figures at threshold 0.5. None when
    any case has no probability (a model without a lesion head, or an audit written before this was kept)."""
    from jmmda_model.metrics import ece_from_bins, froc_curve, froc_summary, pool_reliability

    per_case = [c.get("probability") for c in cases]
    if not per_case or any(m is None for m in per_case):
        return None
    out = {"ece": ece_from_bins(pool_reliability(per_case)), "max_fp_per_case": max_fp}
    for key, counted_only in (("qualifying", True), ("all", False)):
        curve = froc_curve(per_case, counted_only=counted_only)
        best = froc_summary(per_case, max_fp, counted_only=counted_only)  # the point validation reports too
        at05 = min(curve, key=lambda r: abs(r["threshold"] - 0.5))
        n = curve[0]["lesions"] if curve else 0
        out[key] = {"lesions": n,
                    "found_at_max_fp": round(best["sensitivity"] * n) if n else 0,
                    "sensitivity_at_max_fp": best["sensitivity"], "threshold": best["threshold"],
                    "fp_per_case": best["fp_per_case"],
                    "sensitivity_at_0.5": at05["sensitivity"], "fp_per_case_at_0.5": at05["fp_per_case"]}
    return out


def summarise(cases: list[dict], meta: dict) -> tuple[dict, str]:
    lesions = [x for c in cases for x in c["lesions"]]
    q = [x for x in lesions if x["qualifying"]]

    def shown(items):
        k, n = sum(x["shown"] for x in items), len(items)
        lo, hi = wilson(k, n)
        return {"shown": k, "n": n, "sensitivity": k / n if n else float("nan"), "ci95": [lo, hi],
                "darker": sum(x["darker"] for x in items)}

    by = {"height": {name: shown([x for x in q if band_of(x["height"], HEIGHT_BANDS) == name]) for *_, name in HEIGHT_BANDS},
          "volume": {name: shown([x for x in q if band_of(x["volume_ml"], VOLUME_BANDS) == name]) for *_, name in VOLUME_BANDS},
          "ct_contrast": {name: shown([x for x in q if band_of(x.get("ct_contrast_hu", float("nan")), CONTRAST_BANDS) == name])
                          for *_, name in CONTRAST_BANDS}}
    missed = [x for x in q if not x["shown"]]
    fb = float(np.mean([c["false_bright_ml"] for c in cases]))
    part = {k: float(np.mean([c[k] for c in cases])) for k in ("fb_prob_ge_0.5_ml", "fb_deep_ml", "fb_in_clusters_ge_0.5ml_ml")}
    spread = {}
    for *_, name in HEIGHT_BANDS:
        n = sum(c["mirror_diff_spread"][name]["n"] for c in cases)
        s = sum(c["mirror_diff_spread"][name]["sum"] for c in cases)
        s2 = sum(c["mirror_diff_spread"][name]["sum2"] for c in cases)
        spread[name] = math.sqrt(max(s2 / n - (s / n) ** 2, 0.0)) if n else float("nan")
    tables = [c["table"] for c in cases if c.get("table")]
    table = ({"psnr_brain": float(np.mean([t["psnr_brain"] for t in tables])),
              "false_bright_ml": float(np.mean([t["false_bright_ml"] for t in tables]))}
             if tables and len(tables) == len(cases) else None)
    out = {**meta, "cases": len(cases), "lesions": len(lesions), "qualifying": shown(q), "table": table,
           "darker_all": sum(x["darker"] for x in lesions), "by": by,
           "missed_qualifying_p_mean": [x["p_mean"] for x in missed],
           "psnr_brain": float(np.mean([c["psnr_brain"] for c in cases])), "false_bright_ml": fb,
           "false_bright_make_up_ml": part, "normal_mirror_diff_sd_hu": spread,
           "probability_map": probability_summary(cases)}
    sq = out["qualifying"]
    pct = lambda v: f"{100 * v:.0f} %" if math.isfinite(v) else "n/a"  # noqa: E731
    lines = [f"# Lesion audit: {meta['model']} ({time.strftime('%Y-%m-%d')})", "",
             f"Ran: {len(cases)} test phantoms (seeds {meta['seeds']}, never used in training), served path "
             f"(canonical pose, hemispheric comparison, "
             f"{'flip averaging' if meta.get('flip_average') else 'one view per slice'}), model sha256 {meta['model_sha256_16']}..., machine: "
             + ", ".join(f"{k} {v}" for k, v in meta["machine"].items()) + ".", "",
             f"- Qualifying lesions (>= 1 mL, >= 3 HU, real ratio >= 1.3) shown: **{sq['shown']} of {sq['n']} = "
             f"{pct(sq['sensitivity'])}** (95 % CI {pct(sq['ci95'][0])}-{pct(sq['ci95'][1])}); target 85 %: "
             f"{'n/a (no such lesion)' if not sq['n'] else ('MET' if sq['sensitivity'] >= 0.85 else 'MISSED')}; darker than normal: {sq['darker']} of them "
             f"({out['darker_all']} of all {len(lesions)} lesions; target 0: {'MET' if out['darker_all'] == 0 else 'MISSED'}).",
             f"- False-bright normal brain {fb:.1f} mL/case (target 5: {'MET' if fb <= 5 else 'MISSED'}); of it "
             f"{part['fb_prob_ge_0.5_ml']:.1f} mL where the infarct probability is >= 0.5, {part['fb_deep_ml']:.1f} mL "
             f">= {DEEP_MM:g} mm inside the brain, {part['fb_in_clusters_ge_0.5ml_ml']:.1f} mL in clusters of >= 0.5 mL.",
             f"- In-brain PSNR {out['psnr_brain']:.2f} dB" + (
                 f"; the model's own lookup table (its tissue prior) on the same cases {table['psnr_brain']:.2f} dB, "
                 f"{out['psnr_brain'] - table['psnr_brain']:+.2f} dB (target: table + 1 dB, "
                 f"{'MET' if out['psnr_brain'] >= table['psnr_brain'] + 1 else 'MISSED'}), false-bright "
                 f"{table['false_bright_ml']:.1f} mL/case." if table else "."),
             "- Infarct probability: " + (f"calibrated (temperature {meta['probability_temperature']:.2f})"
                                          if meta.get("probability_temperature") else
                                          "NOT calibrated (the checkpoint holds no calibration: temperature 1)") + ".",
             f"- Missed qualifying lesions' mean probability: {', '.join(f'{v:.2f}' for v in sorted(out['missed_qualifying_p_mean'])) or 'none'}.",
             *probability_lines(out["probability_map"]),
             "", "| qualifying lesions by | band | shown / n | sensitivity (95 % CI) | darker |", "|---|---|---|---|---|"]
    for kind, bands in by.items():
        for name, v in bands.items():
            lines.append(f"| {kind} | {name} | {v['shown']} / {v['n']} | {pct(v['sensitivity'])} "
                         f"({pct(v['ci95'][0])}-{pct(v['ci95'][1])}) | {v['darker']} |")
    lines += ["", "Spread (sd) of the smoothed CT-minus-mirror difference over normal brain (15-60 HU), by height: "
              + ", ".join(f"{k} {v:.1f} HU" for k, v in spread.items()) + "."]
    return out, "\n".join(lines) + "\n"


def probability_lines(pm: dict | None) -> list[str]:
    """The probability map's markdown line (none without one)."""
    if pm is None:
        return []
    pct = lambda v: f"{100 * v:.0f} %" if v is not None and math.isfinite(v) else "n/a"  # noqa: E731
    q, a = pm["qualifying"], pm["all"]
    verdict = ("n/a (no such lesion)" if not q["lesions"] else
               "MET" if q["sensitivity_at_max_fp"] >= 0.85 else "MISSED")
    where = (f"threshold {q['threshold']:.2f}, {q['fp_per_case']:.2f} FP clusters/case" if q["threshold"] is not None
             else f"no threshold keeps to {pm['max_fp_per_case']:g} FP clusters/case")
    return [f"- Probability map, lesion-wise: the qualifying lesions found at <= {pm['max_fp_per_case']:g} "
            f"false-positive clusters (>= 0.5 mL) per case: **{q['found_at_max_fp']} of {q['lesions']} = "
            f"{pct(q['sensitivity_at_max_fp'])}** ({where}); target 85 %: {verdict}; all lesions "
            f"{pct(a['sensitivity_at_max_fp'])}. At probability 0.5: {pct(q['sensitivity_at_0.5'])} of the qualifying "
            f"lesions, {q['fp_per_case_at_0.5']:.2f} FP clusters/case. Pooled ECE {pm['ece']:.3f} (target 0.05: "
            f"{'MET' if pm['ece'] <= 0.05 else 'MISSED'})."]


class Ensemble:
    """Several checkpoints as one model: the mean of their syntheses and of their lesion logits, each member run
    through the served path; preprocessing, tissue prior (the table baseline) and probability temperature are the
    first member's."""

    def __init__(self, members):
        self.members = members
        self.pre = members[0].pre

    def predict_volume(self, ct_hu, brain, spacing_zyx, plane=None, mirror=None):
        runs = [m.predict_volume(ct_hu, brain, spacing_zyx, plane, mirror) for m in self.members]
        logits = None if any(r[1] is None for r in runs) else np.mean([r[1] for r in runs], axis=0)
        return np.mean([r[0] for r in runs], axis=0), logits, runs[0][2]

    def probability(self, logits):
        return self.members[0].probability(logits)


def parse_seeds(text: str) -> list[int]:
    a, sep, b = text.partition(":")
    if not sep or not a.strip().isdigit() or not b.strip().isdigit() or int(b) <= int(a):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give FIRST:END (END excluded), e.g. 30000:30120")
    return list(range(int(a), int(b)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=[str(ROOT / "apps/ct2dwi/model/jmmda_demo.pt")],
                   help="one checkpoint, or several: audited as an ensemble (mean synthesis and mean lesion logit)")
    p.add_argument("--seeds", type=parse_seeds, default=parse_seeds("30000:30120"), help="FIRST:END test seeds")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--flip-average", action="store_true",
                   help="each model answers the mean of the slices and their left-right mirror images (as `jmmda "
                        "infer --flip-average`); recorded in run.json")
    a = p.parse_args(argv)
    from compare_models import machine as machine_info

    from jmmda_model.checkpoint import write_json_atomic
    from jmmda_model.inference import Synthesizer
    from jmmda_model.phantom import loaded_case
    from jmmda_model.preprocess import PreprocessConfig

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    hashes = [hashlib.sha256(Path(m).read_bytes()) for m in a.model]
    digest = (hashes[0] if len(hashes) == 1 else hashlib.sha256(b"".join(h.digest() for h in hashes))).hexdigest()[:16]
    seeds = f"{a.seeds[0]}:{a.seeds[-1] + 1}"
    name = Path(a.model[0]).name if len(a.model) == 1 else "ensemble of " + ", ".join(a.model)
    meta = {"model": name, "model_sha256_16": digest, "seeds": seeds, "machine": machine_info(),
            "flip_average": bool(a.flip_average)}
    run = out / "run.json"
    if run.exists():
        old = json.loads(run.read_text())
        if (old["model_sha256_16"], old["seeds"], old.get("flip_average", False)) != (digest, seeds, a.flip_average):
            p.error(f"{out} holds an audit of {old['model']} ({old['model_sha256_16']}) on seeds {old['seeds']}"
                    f"{' with flip averaging' if old.get('flip_average') else ''}: use another --out")
    members = [Synthesizer(m, device=a.device, flip_average=a.flip_average) for m in a.model]
    syn = members[0] if len(members) == 1 else Ensemble(members)
    # the probability's temperature: the (first) checkpoint's calibration, or 1 (uncalibrated: learning-curve
    # checkpoints; an ensemble's mean logit has not been calibrated)
    meta["probability_temperature"] = (members[0].temperature if len(members) == 1
                                       and "lesion_calibration" in members[0].ckpt_meta else None)
    write_json_atomic(meta, run)
    # the test phantoms exactly as learning_curves.py and paired_runs.py build them
    pre = PreprocessConfig.from_dict({**PreprocessConfig().to_dict(), "mirror_channels": True})
    done_path = out / "cases.jsonl"
    cases = [json.loads(line) for line in done_path.read_text().splitlines() if line.strip()] if done_path.exists() else []
    done = {c["case"] for c in cases}
    t0 = time.time()
    for s in a.seeds:
        if f"phantom_{s:03d}" in done:  # loaded_case's name
            continue
        lc = loaded_case(s, pre)
        c = audit_case(syn, lc)
        with open(done_path, "a") as f:  # one line per finished case: an interrupted audit goes on from here
            f.write(json.dumps(c) + "\n")
        cases.append(c)
        q = [x for x in c["lesions"] if x["qualifying"]]
        print(f"{lc.id}: {sum(x['shown'] for x in q)}/{len(q)} qualifying shown, false-bright "
              f"{c['false_bright_ml']:.1f} mL ({time.time() - t0:.0f} s)", flush=True)
    wanted = {f"phantom_{s:03d}" for s in a.seeds}
    summary, md = summarise([c for c in cases if c["case"] in wanted], meta)
    write_json_atomic(summary, out / "audit.json")
    (out / "audit.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
