"""Diagnostic, not a product change: which term of the render head paints the false-bright brain.

The lesion recipe renders out = clamp(prior * (1 + sigmoid(l) * softplus(g)) + r, 0, 1) (networks.RenderHead). For
each test phantom the model is run on its model-grid slices (no canonical turn: the phantoms lie within +-10 deg)
with a hook on the render head, and every false-bright voxel (metrics.lesion_metrics: normal brain > 1.3 x the
normal median in the synthesis, not in the real DWI) is split by what would still be bright
- without the residual (out = prior * (1 + gate)), and
- without the lesion gate (out = prior + r),
against the same normal median. Also the infarct probability (calibrated) there, and for each lesion its
synthetic/normal ratio with all terms, without the residual and without the gate (shown: >= 1.3).

    python benchmarks/records/fb_source_2026-12-05/fb_source.py --model M.pt --seeds 30000:30012 [--out F.jsonl]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from jmmda_model.data import case_input  # noqa: E402
from jmmda_model.inference import Synthesizer, predict_slices  # noqa: E402
from jmmda_model.metrics import lesion_metrics, qualifying  # noqa: E402
from jmmda_model.networks import RenderHead  # noqa: E402
from jmmda_model.phantom import loaded_case  # noqa: E402
from jmmda_model.preprocess import pad_to_multiple  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--seeds", default="30000:30012")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    syn = Synthesizer(a.model, device="cpu", amp=False)
    heads = [m for m in syn.net.modules() if isinstance(m, RenderHead)]
    if len(heads) != 1:
        raise SystemExit(f"{a.model}: not a lesion-recipe model (render heads: {len(heads)})")
    parts = []

    def hook(mod, inp, _out):
        h, prior = inp
        r, logit, g = mod.parts(h)  # as the model renders (its residual bound included)
        parts.append(torch.stack([prior[:, 0], r[:, 0], torch.sigmoid(logit[:, 0]) * F.softplus(g[:, 0])], 1).detach())

    heads[0].register_forward_hook(hook)
    lo, hi = (int(v) for v in a.seeds.split(":"))
    rows = []
    for seed in range(lo, hi):
        lc = loaded_case(seed, syn.pre)
        x = case_input(lc, syn.pre)
        parts.clear()
        y, logits = predict_slices(syn.net, x, syn.device, 8, False, with_logits=True)
        t = torch.cat(parts).numpy()  # (z, 3, H', W') padded like the net's input
        _, (t0, h0, l0, w0) = pad_to_multiple(torch.zeros((1, 1) + y.shape[-2:]), syn.net.size_divisor)
        t = t[..., t0 : t0 + h0, l0 : l0 + w0]
        prior, r, gate = t[:, 0], t[:, 1], t[:, 2]
        check = np.clip(prior * (1 + gate) + r, 0, 1)
        m = lesion_metrics(y, lc.dwi, lc.brain, lc.lesion, ct_hu=lc.ct_hu, spacing=lc.spacing_zyx, masks=True)
        fb, ref = m["false_bright_mask"], m["normal_syn"]
        vox = float(np.prod(lc.spacing_zyx)) / 1000.0
        prob = syn.probability(logits)
        no_r = fb & (prior * (1 + gate) > 1.3 * ref)
        no_gate = fb & (prior + r > 1.3 * ref)
        rows.append({"case": f"phantom_{seed}", "crop_check_max_abs": float(np.abs(check - y)[lc.brain > 0].max()),
                     "false_bright_ml": float(fb.sum()) * vox, "still_without_residual_ml": float(no_r.sum()) * vox,
                     "still_without_gate_ml": float(no_gate.sum()) * vox,
                     "prior_alone_ml": float((fb & (prior > 1.3 * ref)).sum()) * vox,
                     "prob_ge_0.5_ml": float((fb & (prob >= 0.5)).sum()) * vox,
                     "mean_over_ref": {k: float(v[fb].mean() / ref) if fb.any() else None
                                       for k, v in (("out", y), ("prior", prior), ("gate_term", prior * gate), ("residual", r))},
                     "lesions": [{"qualifying": qualifying(les),
                                  "volume_ml": les["volume_ml"], "ratio_syn": les["ratio_syn"],
                                  "without_residual": float(np.mean(np.clip(prior * (1 + gate), 0, 1)[m["labels"] == j + 1]) / ref),
                                  "without_gate": float(np.mean(np.clip(prior + r, 0, 1)[m["labels"] == j + 1]) / ref),
                                  "p_mean": float(prob[m["labels"] == j + 1].mean())}
                                 for j, les in enumerate(m["lesions"])]})
        print(json.dumps(rows[-1]), flush=True)
    les = [x for r_ in rows for x in r_["lesions"] if x["qualifying"] and x["ratio_syn"] >= 1.3]
    n_q = sum(x["qualifying"] for r_ in rows for x in r_["lesions"])
    print(f"qualifying lesions {n_q}, shown {len(les)}; still shown without the residual: "
          f"{sum(x['without_residual'] >= 1.3 for x in les)}, without the gate: {sum(x['without_gate'] >= 1.3 for x in les)}")
    tot = {k: float(np.mean([r_[k] for r_ in rows])) for k in ("false_bright_ml", "still_without_residual_ml",
                                                                 "still_without_gate_ml", "prior_alone_ml", "prob_ge_0.5_ml")}
    print("mean per case:", json.dumps({k: round(v, 2) for k, v in tot.items()}))
    if a.out:
        Path(a.out).write_text("".join(json.dumps(r_) + "\n" for r_ in rows))


if __name__ == "__main__":
    main()
