"""Evaluation report: per-case metric table (CSV, Markdown, JSON), per-lesion table with sensitivity stratified
by CT contrast and volume, and PNG figures (``figure.png``, more pages ``figure_2.png``... when there are more than
8 cases; every case is shown): CT | real DWI | synthetic DWI | abs. error (| infarct probability) at the slice
through the largest lesion of each case (or the most brain when it has none), with L/R markers, colour bars, the
true lesion outline and per panel "shown / missed / false-bright" for the lesions of that case. Models with a
lesion head also get the probability map's calibration (ECE, ``reliability.png``) and lesion-wise FROC
(``froc.png``)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .data import Case, load_case
from .inference import Synthesizer
from .metrics import (
    METRIC_INFO,
    SHOWN_RATIO,
    ece_from_bins,
    evaluate_volume,
    froc_curve,
    froc_summary,
    pool_reliability,
    probability_metrics,
    qualifying,
    stratified_sensitivity,
)

CASES_PER_PAGE = 8

#: headline (in-brain, lesion) first; whole-volume numbers last as secondary columns
COLUMNS = ["psnr_brain", "ssim_brain", "ssim3d_brain", "superpixel_r", "lesion_mae", "lesions_shown", "lesions_total",
           "lesions_darker", "false_bright_ml", "lesion_voxels_clipped", "mse_brain", "psnr", "ssim", "mse"]


def _fmt(v):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"


def markdown_table(rows: list[dict], summary: dict) -> str:
    head = "| case | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + r["case"] + " | " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |\n" for r in rows)
    mean = "| **mean** | " + " | ".join(_fmt(summary[c]["mean"]) for c in COLUMNS) + " |\n"
    sd = "| sd | " + " | ".join(_fmt(summary[c]["sd"]) for c in COLUMNS) + " |\n"
    return head + body + mean + sd


def summarize(rows: list[dict]) -> dict:
    out = {}
    for c in COLUMNS:
        vals = np.array([r.get(c, np.nan) for r in rows], float)
        vals = vals[np.isfinite(vals)]
        out[c] = {"mean": float(vals.mean()) if vals.size else float("nan"), "sd": float(vals.std()) if vals.size else float("nan"), "n": int(vals.size)}
    return out


def figure(panels: list[dict], path: Path) -> list[Path]:
    """One row per case, ``CASES_PER_PAGE`` rows per page: figure.png, figure_2.png, ... (all cases shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pages = [panels[i : i + CASES_PER_PAGE] for i in range(0, len(panels), CASES_PER_PAGE)] or [[]]
    paths = []
    for n_page, page in enumerate(pages, 1):
        with_prob = any(p.get("prob") is not None for p in page)
        cols = 5 if with_prob else 4
        fig, axes = plt.subplots(max(len(page), 1), cols, figsize=(3.1 * cols, 3.3 * max(len(page), 1)), squeeze=False)
        for r, p in enumerate(page):
            err = np.abs(p["syn"] - p["real"])
            items = [(p["ct"], f"{p['case']}: CT (W80 L40), slice {p['slice']}", dict(cmap="gray", vmin=0, vmax=80), None),
                     (p["real"], "real DWI", dict(cmap="gray", vmin=0, vmax=0.8), None),
                     (p["syn"], "SYNTHETIC DWI", dict(cmap="gray", vmin=0, vmax=0.8), None),
                     (err, "|error| (normalised DWI)", dict(cmap="magma", vmin=0, vmax=0.5), "error")]
            if with_prob:
                items.append((p.get("prob") if p.get("prob") is not None else np.zeros_like(err),
                              "infarct probability (calibrated)", dict(cmap="inferno", vmin=0, vmax=1), "probability"))
            for c, (img, title, kw, bar) in enumerate(items):
                ax = axes[r, c]
                im = ax.imshow(img, origin="upper", **kw)
                if p["lesion"].any():
                    ax.contour(p["lesion"], levels=[0.5], colors="c", linewidths=0.7)
                if bar:
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(bar, fontsize=7)
                # axial LPS arrays: column 0 is the patient's right
                ax.text(2, img.shape[0] / 2, "R", color="y", fontsize=8, va="center")
                ax.text(img.shape[1] - 3, img.shape[0] / 2, "L", color="y", fontsize=8, va="center", ha="right")
                ax.set_title(title, fontsize=8)
                ax.axis("off")
            axes[r, 2].set_xlabel(p["verdict"], fontsize=7)
            axes[r, 2].text(0.5, -0.04, p["verdict"], transform=axes[r, 2].transAxes, fontsize=7, ha="center", va="top",
                            color="k")
        fig.suptitle(f"JMMDA-GAN evaluation (page {n_page}/{len(pages)}) - SYNTHETIC images are not for diagnosis; "
                     "cyan: true lesion outline", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        out = path if n_page == 1 else path.with_name(f"{path.stem}_{n_page}{path.suffix}")
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        plt.close(fig)
        paths.append(out)
    return paths


def probability_figures(rel: dict, froc: list[dict], out: Path) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = np.asarray(rel["count"], float)
    conf = np.asarray(rel["sum_p"]) / np.maximum(count, 1)
    acc = np.asarray(rel["sum_y"]) / np.maximum(count, 1)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ok = count > 0
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.plot(conf[ok], acc[ok], "o-", label=f"model (ECE {ece_from_bins(rel):.3f})")
    ax.set_xlabel("predicted infarct probability (bin mean)")
    ax.set_ylabel("fraction of voxels in the true lesion")
    ax.set_title("Reliability of the SYNTHETIC infarct probability\n(in-brain voxels, all cases pooled)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    rel_path = out / "reliability.png"
    fig.savefig(rel_path, dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.plot([r["fp_per_case"] for r in froc], [r["sensitivity"] for r in froc], "o-")
    for r in froc[::4]:
        ax.annotate(f"{r['threshold']:.2f}", (r["fp_per_case"], r["sensitivity"]), fontsize=6)
    ax.axvline(2.0, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("false-positive clusters (>= 0.5 mL) per case")
    ax.set_ylabel("lesion-wise sensitivity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("FROC of the infarct probability (labels: thresholds)", fontsize=9)
    fig.tight_layout()
    froc_path = out / "froc.png"
    fig.savefig(froc_path, dpi=90)
    plt.close(fig)
    return rel_path, froc_path


def _verdict(detail: list[dict], false_bright_ml: float) -> str:
    parts = [f"lesion {i + 1}: {'shown' if x['shown'] else 'MISSED'}{' (darker)' if x['darker'] else ''}"
             for i, x in enumerate(detail)]
    return "; ".join(parts + [f"false-bright {false_bright_ml:.1f} mL"]) if parts else f"no lesion; false-bright {false_bright_ml:.1f} mL"


def lesion_table(lesions: list[dict]) -> str:
    head = "| case | lesion | volume mL | CT contrast HU | real ratio | synthetic ratio | shown | darker |\n|---|---|---|---|---|---|---|---|\n"
    return head + "".join(
        f"| {x['case']} | {x['index']} | {x['volume_ml']:.2f} | {_fmt(x.get('ct_contrast_hu'))} | {x['ratio_real']:.2f} | "
        f"{x['ratio_syn']:.2f} | {'yes' if x['shown'] else 'no'} | {'yes' if x['darker'] else 'no'} |\n"
        for x in lesions
    )


def sensitivity_table(sens: dict) -> str:
    head = f"| lesions | shown (synthetic ratio >= {SHOWN_RATIO}) | n | sensitivity | darker than normal |\n|---|---|---|---|---|\n"
    return head + "".join(
        f"| {k} | {v['shown']} | {v['n']} | {_fmt(v['sensitivity'])} | {v['darker']} |\n" for k, v in sens.items()
    )


def sample_strip(ct: np.ndarray, real: np.ndarray, syn: np.ndarray, title: str = "", lesion: np.ndarray | None = None,
                 prob: np.ndarray | None = None):
    """PIL image CT (W80 L40) | real DWI | SYNTHETIC DWI (| infarct probability) of one slice, labelled, with the
    true lesion outlined in cyan on every panel; for the training page."""
    from PIL import Image, ImageDraw
    from scipy import ndimage as ndi

    def gray(a, lo, hi):
        g = np.clip((np.asarray(a, np.float32) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)
        return np.stack([g, g, g], -1)

    panels = [gray(ct, 0.0, 80.0), gray(real, 0.0, 0.8), gray(syn, 0.0, 0.8)]
    labels = ["CT", "real DWI", "SYNTHETIC DWI"]
    if prob is not None:  # "hot" colours: black -> red -> yellow -> white
        p = np.clip(np.asarray(prob, np.float32), 0, 1)
        panels.append((np.stack([np.clip(3 * p, 0, 1), np.clip(3 * p - 1, 0, 1), np.clip(3 * p - 2, 0, 1)], -1) * 255)
                      .astype(np.uint8))
        labels.append("infarct prob. (0-1)")
    if lesion is not None and np.asarray(lesion).any():
        les = np.asarray(lesion) > 0
        edge = les & ~ndi.binary_erosion(les)
        for pnl in panels:
            pnl[edge] = (0, 255, 255)
    h, w = panels[0].shape[:2]
    strip = Image.new("RGB", (len(panels) * (w + 4) + 4, h + 30), (0, 0, 0))
    for i, pnl in enumerate(panels):
        strip.paste(Image.fromarray(pnl), (i * (w + 4), 16))
    draw = ImageDraw.Draw(strip)
    for i, label in enumerate(labels):
        draw.text((i * (w + 4) + 2, 2), label, fill=(255, 255, 255))
    draw.text((2, h + 18), (title + "   cyan: true lesion outline") if lesion is not None else title, fill=(200, 200, 200))
    return strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST)


def predict_case(syn: Synthesizer, lc, with_probability: bool = False):
    """Synthetic DWI of a loaded case as ``jmmda infer`` computes it (canonical pose); with ``with_probability``
    also the calibrated infarct probability (None for models without a lesion head)."""
    y, logits, _ = syn.predict_volume(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.midplane, lc.mirror_hu)
    y = y * lc.brain if syn.pre.mask_output else y
    if not with_probability:
        return y
    return y, (syn.probability(logits) * lc.brain if logits is not None else None)


def scored_cases(syn: Synthesizer, cases, with_probability: bool = False):
    """Each case with a real DWI through the ``jmmda infer`` pipeline: yields (case, loaded case, synthetic DWI,
    calibrated probability or None, metrics, lesion details); cases without a real DWI are skipped."""
    for case in cases:
        lc = load_case(case, syn.pre)
        if lc.dwi is None:
            continue
        y, prob = predict_case(syn, lc, with_probability=True) if with_probability else (predict_case(syn, lc), None)
        m = evaluate_volume(y, lc.dwi, lc.brain, lc.lesion, lc.spacing_zyx, ct_hu=lc.ct_hu, target_unclipped=lc.dwi_unclipped)
        yield case, lc, y, prob, m, m.pop("lesion_detail")


def score_model(model: str | Path, cases: list[Case], device: str | None = None) -> dict:
    """Lesion metrics first, then image metrics, of ``model`` on ``cases`` through the ``jmmda infer`` pipeline
    (what ``evaluate_cases`` reports, without files): the server compares a candidate version with the served
    one on the same cases with this. Cases without a real DWI are skipped."""
    rows, lesions = [], []
    for _, _, _, _, m, detail in scored_cases(Synthesizer(model, device=device), cases):
        lesions += detail
        rows.append(m)
    if not rows:
        return {"cases": 0}
    q = [x for x in lesions if qualifying(x)]
    return {
        "cases": len(rows),
        "lesions": len(lesions),
        "lesion_sensitivity": float(np.mean([x["shown"] for x in lesions])) if lesions else None,
        "qualifying_lesions": len(q),
        "qualifying_sensitivity": float(np.mean([x["shown"] for x in q])) if q else None,
        "lesions_darker": int(sum(x["darker"] for x in lesions)),
        "false_bright_ml": float(np.mean([r["false_bright_ml"] for r in rows])),
        "psnr_brain": float(np.mean([r["psnr_brain"] for r in rows])),
        "ssim_brain": float(np.mean([r["ssim_brain"] for r in rows])),
    }


def lesion_verdict(candidate: dict, served: dict) -> list[str]:
    """Where ``candidate`` is worse than ``served`` on lesions (empty: not worse): lower sensitivity (all or
    qualifying lesions), more lesions darker than normal brain, more false-bright brain (> 1 mL per case)."""
    worse = []
    for key, label in (("lesion_sensitivity", "shows fewer lesions"), ("qualifying_sensitivity", "shows fewer qualifying lesions")):
        a, b = candidate.get(key), served.get(key)
        if a is not None and b is not None and a < b:
            worse.append(f"{label} ({a:.2f} vs {b:.2f})")
    if candidate.get("lesions_darker", 0) > served.get("lesions_darker", 0):
        worse.append(f"renders more lesions darker than normal brain ({candidate['lesions_darker']} vs {served['lesions_darker']})")
    if candidate.get("false_bright_ml", 0.0) > served.get("false_bright_ml", 0.0) + 1.0:
        worse.append(f"more false-bright brain ({candidate['false_bright_ml']:.1f} vs {served['false_bright_ml']:.1f} mL per case)")
    return worse


def evaluate_cases(model: str | Path, cases: list[Case], out_dir: str | Path, device: str | None = None,
                   progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    syn = Synthesizer(model, device=device)
    rows, panels, lesions, prob_metrics = [], [], [], []
    progress_cases = tqdm(cases, desc="evaluating", unit="case", disable=not progress, dynamic_ncols=True)
    for case, lc, y, prob, m, detail in scored_cases(syn, progress_cases, with_probability=True):
        lesions += [{"case": case.id, "index": i + 1, **x} for i, x in enumerate(detail)]
        rows.append({"case": case.id, **m})
        if prob is not None:
            prob_metrics.append(probability_metrics(prob, lc.lesion, lc.brain, lc.spacing_zyx,
                                                    counted=[qualifying(x) for x in detail]))
        per_slice = lc.lesion.reshape(lc.lesion.shape[0], -1).sum(1)
        if per_slice.max() == 0:
            per_slice = lc.brain.reshape(lc.brain.shape[0], -1).sum(1)
        k = int(per_slice.argmax())
        panels.append({"case": case.id, "slice": k, "ct": lc.ct_hu[k], "real": lc.dwi[k], "syn": y[k],
                       "lesion": lc.lesion[k] > 0, "prob": None if prob is None else prob[k],
                       "verdict": _verdict(detail, m["false_bright_ml"])})
    summary = summarize(rows)
    sens = stratified_sensitivity(lesions)
    table = markdown_table(rows, summary)
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case"] + COLUMNS + ["superpixels"])
        w.writeheader()
        w.writerows(rows)
    report = {
        "model": str(model),
        "model_card": syn.model_card,
        "data_range": 1.0,
        "intensity_note": "DWI normalised to [0, 1] by in-brain percentiles before comparison",
        "metrics": METRIC_INFO,
        "cases": rows,
        "summary": summary,
        "lesions": lesions,
        "lesion_sensitivity": sens,
    }
    prob_md = ""
    if prob_metrics:
        rel = pool_reliability(prob_metrics)
        curve = froc_curve(prob_metrics)
        at2, at2_big = froc_summary(prob_metrics, 2.0), froc_summary(prob_metrics, 2.0, min_ml=1.0)
        at2_q = froc_summary(prob_metrics, 2.0, counted_only=True)
        rel_png, froc_png = probability_figures(rel, curve, out)
        report["probability"] = {"ece": ece_from_bins(rel), "temperature": syn.temperature, "reliability": rel,
                                 "froc": curve, "sensitivity_at_2fp": at2, "sensitivity_at_2fp_lesions_ge_1ml": at2_big,
                                 "sensitivity_at_2fp_qualifying": at2_q,
                                 "per_case_ece": [m["ece"] for m in prob_metrics]}
        op = syn.operating_threshold  # where the viewer's outline starts: these cases read at that threshold
        op_row = op_q = None
        if op is not None:
            op_row = min(curve, key=lambda r: abs(r["threshold"] - op))
            op_q = min(froc_curve(prob_metrics, counted_only=True), key=lambda r: abs(r["threshold"] - op))
            report["probability"]["operating_point"] = {
                "threshold": op, "sensitivity": op_row["sensitivity"], "sensitivity_qualifying": op_q["sensitivity"],
                "fp_per_case": op_row["fp_per_case"]}
        prob_md = (f"\n## Infarct probability (calibrated on phantoms only; a low probability never rules out an "
                   f"infarct)\n\nTemperature {syn.temperature:.3f}; ECE {ece_from_bins(rel):.4f} (in-brain voxels, "
                   f"pooled); lesion-wise sensitivity at <= 2 false-positive clusters (>= 0.5 mL) per case: "
                   f"{_fmt(at2['sensitivity'])} (threshold {at2['threshold']}), lesions >= 1 mL: "
                   f"{_fmt(at2_big['sensitivity'])}, lesions the CT shows (>= 1 mL, >= 3 HU, real DWI ratio >= 1.3): "
                   f"{_fmt(at2_q['sensitivity'])}."
                   + (f" At the model's operating point {op:.2f} (chosen on its validation cases: the lowest threshold "
                      f"with <= 2 false-positive clusters per case there; where the viewer's outline starts): "
                      f"sensitivity {_fmt(op_row['sensitivity'])}, lesions the CT shows {_fmt(op_q['sensitivity'])}, "
                      f"{op_row['fp_per_case']:.2f} false-positive clusters per case on these cases." if op_row else "")
                   + "\n\n| threshold | sensitivity | FP clusters / case |\n|---|---|---|\n"
                   + "".join(f"| {r['threshold']:.2f}{' (operating point)' if r is op_row else ''} | "
                             f"{_fmt(r['sensitivity'])} | {r['fp_per_case']:.2f} |\n" for r in curve)
                   + f"\n![reliability]({rel_png.name}) ![FROC]({froc_png.name})\n")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    md = (
        "# JMMDA-GAN evaluation\n\nSynthetic DWI - research use only, not for diagnosis.\n\n"
        f"Model: `{model}`; data range 1.0 (DWI normalised to [0, 1] inside the brain).\n\n"
        + table
        + "\n## Lesions\n\n"
        + sensitivity_table(sens)
        + "\n"
        + lesion_table(lesions)
        + prob_md
        + "\n"
        + "\n".join(f"- `{k}`: {v}" for k, v in METRIC_INFO.items())
        + "\n\n"
    )
    figs = figure(panels, out / "figure.png")
    md += "".join(f"![figure]({f.name})\n" for f in figs)
    (out / "report.md").write_text(md)
    fig = figs[0]
    return {"figures": [str(f) for f in figs], "probability": report.get("probability"),"rows": rows, "summary": summary, "table_markdown": table, "lesions": lesions, "lesion_sensitivity": sens,
            "sensitivity_markdown": sensitivity_table(sens), "report": str(out / "report.md"), "figure": str(fig)}
