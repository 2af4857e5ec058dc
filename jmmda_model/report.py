"""Evaluation report: per-case metric table (CSV, Markdown, JSON), per-lesion table with sensitivity stratified
by CT contrast and volume, and a PNG figure CT | real DWI | synthetic DWI | abs. error at the slice through
the largest lesion of each case (or the most brain when it has none)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .data import Case, case_input, load_case
from .inference import Synthesizer
from .metrics import METRIC_INFO, SHOWN_RATIO, evaluate_volume, stratified_sensitivity

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


def figure(panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(n, 4, figsize=(12, 3.2 * n), squeeze=False)
    for r, (cid, ct, real, syn, lesion) in enumerate(panels):
        err = np.abs(syn - real)
        for ax, img, title, kw in (
            (axes[r, 0], ct, f"{cid}: CT (W80 L40)", dict(cmap="gray", vmin=0, vmax=80)),
            (axes[r, 1], real, "real DWI", dict(cmap="gray", vmin=0, vmax=0.8)),
            (axes[r, 2], syn, "SYNTHETIC DWI", dict(cmap="gray", vmin=0, vmax=0.8)),
            (axes[r, 3], err, "|error|", dict(cmap="magma", vmin=0, vmax=0.5)),
        ):
            ax.imshow(img, origin="upper", **kw)
            if lesion.any() and title != "|error|":
                ax.contour(lesion, levels=[0.5], colors="r", linewidths=0.6)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("JMMDA-GAN evaluation - synthetic images are not for diagnosis", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


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


def sample_strip(ct: np.ndarray, real: np.ndarray, syn: np.ndarray, title: str = ""):
    """PIL image CT (W80 L40) | real DWI | SYNTHETIC DWI of one slice, labelled; for the training page."""
    from PIL import Image, ImageDraw

    def gray(a, lo, hi):
        return np.clip((np.asarray(a, np.float32) - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)

    panels = [gray(ct, 0.0, 80.0), gray(real, 0.0, 0.8), gray(syn, 0.0, 0.8)]
    h, w = panels[0].shape
    strip = Image.new("L", (3 * w + 8, h + 30), 0)
    for i, p in enumerate(panels):
        strip.paste(Image.fromarray(p), (i * (w + 4), 16))
    draw = ImageDraw.Draw(strip)
    for i, label in enumerate(("CT", "real DWI", "SYNTHETIC DWI")):
        draw.text((i * (w + 4) + 2, 2), label, fill=255)
    if title:
        draw.text((2, h + 18), title, fill=200)
    return strip.resize((strip.width * 2, strip.height * 2), Image.NEAREST)


def predict_case(syn: Synthesizer, lc) -> np.ndarray:
    y = syn.predict_slices(case_input(lc, syn.pre))
    return y * lc.brain if syn.pre.mask_output else y


def evaluate_cases(model: str | Path, cases: list[Case], out_dir: str | Path, device: str | None = None,
                   progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    syn = Synthesizer(model, device=device)
    rows, panels, lesions = [], [], []
    for case in tqdm(cases, desc="evaluating", unit="case", disable=not progress, dynamic_ncols=True):
        lc = load_case(case, syn.pre)
        if lc.dwi is None:
            continue
        y = predict_case(syn, lc)
        m = evaluate_volume(y, lc.dwi, lc.brain, lc.lesion, lc.spacing_zyx, ct_hu=lc.ct_hu, target_unclipped=lc.dwi_unclipped)
        detail = m.pop("lesion_detail")
        lesions += [{"case": case.id, "index": i + 1, **x} for i, x in enumerate(detail)]
        rows.append({"case": case.id, **m})
        per_slice = lc.lesion.reshape(lc.lesion.shape[0], -1).sum(1)
        if per_slice.max() == 0:
            per_slice = lc.brain.reshape(lc.brain.shape[0], -1).sum(1)
        k = int(per_slice.argmax())
        panels.append((case.id, lc.ct_hu[k], lc.dwi[k], y[k], lc.lesion[k] > 0))
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
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    md = (
        "# JMMDA-GAN evaluation\n\nSynthetic DWI - research use only, not for diagnosis.\n\n"
        f"Model: `{model}`; data range 1.0 (DWI normalised to [0, 1] inside the brain).\n\n"
        + table
        + "\n## Lesions\n\n"
        + sensitivity_table(sens)
        + "\n"
        + lesion_table(lesions)
        + "\n"
        + "\n".join(f"- `{k}`: {v}" for k, v in METRIC_INFO.items())
        + "\n\n![figure](figure.png)\n"
    )
    (out / "report.md").write_text(md)
    fig = figure(panels[:6], out / "figure.png")
    return {"rows": rows, "summary": summary, "table_markdown": table, "lesions": lesions, "lesion_sensitivity": sens,
            "sensitivity_markdown": sensitivity_table(sens), "report": str(out / "report.md"), "figure": str(fig)}
