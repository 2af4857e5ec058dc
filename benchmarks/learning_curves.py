#!/usr/bin/env python
"""Learning curves of the lesion recipe against the legacy recipe, pix2pix and a U-Net + prior, beside the table.

    python benchmarks/learning_curves.py --out runs/curves --steps 600 --eval-every 100 --seeds 0,1,2
    (also: python benchmarks/compare_models.py --curves ...; ./run.sh bench --curves ...)

What it runs, exactly:
* phantoms built in memory (jmmda_model.phantom.loaded_case, 1.8 x 1.8 x 5 mm): training seeds 10000.. (never
  used anywhere else), calibration seeds 20000.. (temperature of the lesion probability), test seeds 30000..
  (never used in training; not the committed sample cases either);
* arms (``--arms``): ``legacy`` (the earlier whole-slice JMMDA GAN: no mirror channels, no prior, 3x lesion-slice
  oversampling, contrast loss), ``jmmda`` (lesion recipe: mirror-difference channels, tissue prior + residual,
  lesion head with BCE + Dice, lesion-centred patches), ``pix2pix`` (same recipe, pix2pix U-Net generator, same
  depth and base width), ``unet_prior`` (same recipe and U-Net without the adversarial loss: the simplest
  competitor, a segmenter + the prior), and ``lut`` (the tissue prior alone, fitted on the training phantoms);
* every network arm x seed trains for exactly ``--steps`` optimiser steps of ``--batch-size`` crops (or slices for
  legacy) and is evaluated on all test phantoms every ``--eval-every`` steps (the learning curve);
* per evaluation: qualifying-lesion sensitivity (>= 1 mL, CT contrast >= 3 HU, real ratio >= 1.3; shown when the
  synthetic lesion/normal ratio >= 1.3), lesions rendered darker than normal, false-bright mL per case, in-brain
  PSNR; at the last step also the probability map (temperature fitted on the calibration phantoms): ECE and
  lesion-wise sensitivity at <= 2 false-positive clusters (>= 0.5 mL) per case;
* with the generator weight average on (``--ema``, default 0.999) the raw weights are scored beside it at every
  evaluation (``raw`` in each point): the report gives both curves' swing and level; ``--rotate-deg`` sets the
  in-plane rotation augmentation (0: off; ``legacy`` has neither);
* statistics: mean +- sd over seeds; paired per-case differences jmmda - pix2pix (each case averaged over seeds)
  with 95 % t intervals; an interval containing 0 is reported as a tie.

Resumable: each run keeps its own checkpoint and curve file; a finished run is skipped, an interrupted one goes
on from its last evaluation. Output: ``<out>/curves.json``, ``<out>/curves.md``, ``<out>/learning_curves.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:  # the GPU machine lent for benchmarks has no SimpleITK wheel small enough to carry; nothing here needs it
    import SimpleITK  # noqa: F401
except ImportError:  # pragma: no cover - only there
    sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")

TRAIN_SEED0, CAL_SEED0, TEST_SEED0 = 10000, 20000, 30000
#: what runs recorded before a setting existed ran with; one dict for both readers of an old run_args.json (the
#: report's header and the resume check, which refuses to resume an old folder with another value of them)
SETTINGS_BEFORE_THEY_EXISTED = {"ema": 0.0, "rotate_deg": 0.0, "prior_lift_hu": 0.0, "lambda_adv": 1.0,
                                "lr_schedule": "constant", "lr_final_ratio": 0.05, "hard_negative_fraction": 0.0,
                                "noise_augment_hu": 0.0, "noise_augment_probability": 0.5, "residual_bound": 0.0,
                                "mirror_noise_ref_hu": None, "context_slices": 1, "unseen_lesion_hu": 0.0}
NETWORK_ARMS = {
    "legacy": {"gen": {"residual_prior": False, "residual_bound": 0.0}, "pre": {"mirror_channels": False},
               "train": {"patch_size": None, "lesion_oversample": 3, "ema_decay": 0.0, "rotate_deg": 0.0,
                         "hard_negative_fraction": 0.0, "noise_augment_hu": 0.0, "unseen_lesion_hu": 0.0}},
    "jmmda": {"gen": {}, "pre": {}, "train": {}},
    "pix2pix": {"gen": {"arch": "pix2pix"}, "pre": {}, "train": {}},
    "unet_prior": {"gen": {"arch": "pix2pix"}, "pre": {}, "train": {"lambda_adv": 0.0}},
}
ALL_ARMS = "legacy,jmmda,pix2pix,unet_prior,lut"
#: measures also recorded for the raw (not averaged) weights at each evaluation, when the weight average is on
RAW_KEYS = ("psnr_brain", "false_bright_ml", "qualifying_sensitivity", "darker", "darker_qualifying")


def _load(args_tuple):
    seed, pre_dict, phantom = args_tuple
    from jmmda_model.phantom import PhantomConfig, loaded_case
    from jmmda_model.preprocess import PreprocessConfig

    lc = loaded_case(seed, PreprocessConfig.from_dict(pre_dict), PhantomConfig(**phantom) if phantom else None)
    lc.image = None
    return lc


def make_cases(seeds, pre, workers: int, phantom: dict | None = None):
    """Phantoms with their mirror images (the mirror is computed for every arm; arms without it ignore it).
    ``phantom``: PhantomConfig settings other than the defaults."""
    from multiprocessing import get_context

    pre = {**pre.to_dict(), "mirror_channels": True}
    jobs = [(s, pre, phantom) for s in seeds]
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            return pool.map(_load, jobs, chunksize=1)
    return [_load(j) for j in jobs]


def evaluate(pred_fn, cases, with_prob=None) -> dict:
    """pred_fn(lc) -> (dwi, logits or None). Per-case metrics + pooled lesion lists."""
    from jmmda_model.metrics import (
        SHOWN_RATIO,
        lesion_metrics,
        probability_metrics,
        psnr,
        qualifying,
    )

    per_case, lesions, prob = [], [], []
    for lc in cases:
        y, lg = pred_fn(lc)
        y = y * lc.brain
        les = lesion_metrics(y, lc.dwi, lc.brain, lc.lesion, lc.ct_hu, lc.spacing_zyx)
        q = [x for x in les["lesions"] if qualifying(x)]
        lesions += [{"case": lc.id, **x} for x in les["lesions"]]
        per_case.append({"case": lc.id, "psnr_brain": psnr(y, lc.dwi, lc.brain), "false_bright_ml": les["false_bright_ml"],
                         "qualifying": len(q), "shown": sum(x["shown"] for x in q),
                         "darker": sum(x["darker"] for x in les["lesions"]),
                         "darker_qualifying": sum(x["darker"] for x in q),
                         "mean_ratio_qualifying": float(np.mean([x["ratio_syn"] for x in q])) if q else float("nan")})
        if with_prob is not None and lg is not None:
            prob.append(probability_metrics(with_prob(lg) * lc.brain, lc.lesion, lc.brain, lc.spacing_zyx,
                                            counted=[qualifying(x) for x in les["lesions"]]))
    q_all = [x for x in lesions if qualifying(x)]
    out = {
        "psnr_brain": float(np.mean([c["psnr_brain"] for c in per_case])),
        "false_bright_ml": float(np.mean([c["false_bright_ml"] for c in per_case])),
        "qualifying_sensitivity": float(np.mean([x["shown"] for x in q_all])) if q_all else float("nan"),
        "qualifying_lesions": len(q_all),
        "darker": int(sum(x["darker"] for x in lesions)),
        "darker_qualifying": int(sum(x["darker"] for x in q_all)),
        "lesions": len(lesions),
        "shown_ratio": SHOWN_RATIO,
        "per_case": per_case,
    }
    if prob:
        from jmmda_model.metrics import ece_from_bins, froc_summary, pool_reliability

        out["prob_ece"] = ece_from_bins(pool_reliability(prob))
        out["prob_froc_2fp"] = froc_summary(prob, 2.0)
        out["prob_froc_2fp_ge1ml"] = froc_summary(prob, 2.0, min_ml=1.0)
        out["prob_froc_2fp_qualifying"] = froc_summary(prob, 2.0, counted_only=True)
        out["reliability"] = pool_reliability(prob)
    return out


def run_network(name, seed, args, train, cal, test, out_dir: Path) -> dict:

    from jmmda_model import checkpoint as ckpt_io
    from jmmda_model.data import case_input
    from jmmda_model.inference import predict_slices
    from jmmda_model.metrics import calibrated_probability, fit_temperature
    from jmmda_model.networks import GeneratorConfig
    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.trainer import TrainConfig, Trainer

    run_dir = out_dir / f"{name}_s{seed}"
    curve_path = run_dir / "curve.json"
    curve = json.loads(curve_path.read_text()) if curve_path.exists() else {"points": []}
    if curve.get("done") and not (curve.get("steps", 0) < args.steps and "capped_at_step" not in curve):
        return curve
    curve["done"] = False  # a finished run asked for more steps (constant learning rate: the same recipe) goes on
    spec = NETWORK_ARMS[name]
    # the hemispheric difference in noise units: for every arm with the mirror channels (not the legacy arm)
    noise_ref = ({"mirror_noise_ref_hu": args.mirror_noise_ref_hu}
                 if args.mirror_noise_ref_hu and spec["pre"].get("mirror_channels", True) else {})
    pre = PreprocessConfig(**{**noise_ref, "context_slices": args.context_slices, **spec["pre"]})
    gen = GeneratorConfig(base_channels=args.base_channels, depth=args.depth, heads=args.heads,
                          **{"residual_prior": True, "residual_bound": args.residual_bound, **spec["gen"]})
    train_over = {"patch_size": args.patch_size, "ema_decay": args.ema, "rotate_deg": args.rotate_deg,
                  "prior_mirror_lift_hu": args.prior_lift_hu, "lambda_adv": args.lambda_adv,
                  "lr_schedule": args.lr_schedule, "lr_final_ratio": args.lr_final_ratio,
                  "hard_negative_fraction": args.hard_negative_fraction, "noise_augment_hu": args.noise_augment_hu,
                  "noise_augment_probability": args.noise_augment_probability,
                  "unseen_lesion_hu": args.unseen_lesion_hu, **spec["train"]}
    cfg = TrainConfig(generator=gen.to_dict(), preprocess=pre.to_dict(), epochs=10**6,
                      max_steps_per_epoch=args.eval_every, max_steps=args.steps, batch_size=args.batch_size,
                      lr_g=args.lr, lr_d=args.lr, seed=seed, progress=False, tensorboard=False, device=args.device,
                      **train_over)
    trainer = Trainer(cfg, run_dir)
    t0 = time.time()
    wall_before = curve["points"][-1]["wall_s"] if curve["points"] else 0.0
    cap_s = args.max_minutes * 60 if args.max_minutes else None

    def logits_fn(lc, net=None):
        return predict_slices(trainer.G_eval if net is None else net, case_input(lc, trainer.pre), trainer.device, batch_size=16,
                              amp=trainer.amp, with_logits=True)

    def on_epoch(record):
        wall = time.time() - t0 + wall_before
        capped = cap_s is not None and wall >= cap_s and trainer.global_step < args.steps
        last = trainer.global_step >= args.steps or capped
        if not last and trainer.global_step < (len(curve["points"]) + 1) * args.eval_every:
            return  # a short epoch (few training slices): evaluate at multiples of --eval-every only
        temp = None
        if last and trainer.has_lesion_head:
            lg = [logits_fn(lc)[1] for lc in cal]
            temp = fit_temperature([g[lc.brain > 0] for g, lc in zip(lg, cal)], [lc.lesion[lc.brain > 0] for lc in cal])
        sig = (lambda g: calibrated_probability(g, temp)) if temp else None
        m = evaluate(logits_fn, test, with_prob=sig)
        if trainer.G_ema is not None:  # the raw weights beside their average, at the same step (paired)
            raw = evaluate(lambda lc: logits_fn(lc, trainer.G), test)
            m["raw"] = {k: raw[k] for k in RAW_KEYS}
        m.update({"step": trainer.global_step, "wall_s": round(time.time() - t0 + wall_before, 1)})
        if capped:  # the stated wall cap: this evaluation is the run's last; the trainer stops after this epoch
            curve["capped_at_step"] = trainer.global_step
            trainer.cfg.max_steps = trainer.global_step
        if temp:
            m["temperature"] = temp
        curve["points"].append(m)
        ckpt_io.write_json_atomic(curve, curve_path)
        print(f"[{name} s{seed}] step {trainer.global_step}: sens {m['qualifying_sensitivity']:.2f} "
              f"({m['qualifying_lesions']}) darker {m['darker']} false-bright {m['false_bright_ml']:.1f} mL "
              f"PSNR {m['psnr_brain']:.2f}" + (f" ECE {m.get('prob_ece', float('nan')):.3f}" if temp else ""), flush=True)

    trainer.on_epoch = on_epoch
    done = {p["step"] for p in curve["points"]}
    if done:  # resumed: the checkpoint holds the last evaluated step
        curve["points"] = [p for p in curve["points"] if p["step"] <= max(done)]
    trainer.fit_loaded(train, [], resume=True)
    curve["wall_s"] = round(time.time() - t0 + wall_before, 1)
    curve["steps"] = trainer.global_step
    curve["done"] = True
    curve["params"] = int(sum(p.numel() for p in trainer.G.parameters()))
    ckpt_io.write_json_atomic(curve, curve_path)
    return curve


def _run_job(job):
    name, seed, args, data_path, out_dir = job
    import pickle

    import torch

    torch.set_num_threads(max(1, args.threads))
    with open(data_path, "rb") as f:
        train, cal, test = pickle.load(f)
    return name, seed, run_network(name, seed, args, train, cal, test, Path(out_dir))


def paired_ci(a: list[float], b: list[float]):
    """Mean of A - B and its paired 95 % t interval (``compare_models.t_ci`` of the differences)."""
    from compare_models import t_ci

    return t_ci(np.asarray(a, float) - np.asarray(b, float))


def pair_by_seed(a_cases: list[dict], b_cases: list[dict], keys) -> dict:
    """{key: (diff, lo, hi, n_seeds)}: the paired t interval over seeds of each seed's mean B - A over the cases both
    hold (a case's seed is the part of its name before the first "/", e.g. "s0/phantom_30000"). Every case of one
    seed's run shares that training's draw, so this - not the interval over cases - is the recipe's interval."""
    b_by = {c["case"]: c for c in b_cases}
    seeds: dict[str, list] = {}
    for c in a_cases:
        if c["case"] in b_by:
            seeds.setdefault(c["case"].split("/", 1)[0], []).append((c, b_by[c["case"]]))
    out = {}
    for k in keys:
        ma = [float(np.mean([p[0][k] for p in pairs])) for pairs in seeds.values()]
        mb = [float(np.mean([p[1][k] for p in pairs])) for pairs in seeds.values()]
        out[k] = (*paired_ci(mb, ma), len(seeds))
    return out


FLAT = {"qualifying_sensitivity": 0.05, "psnr_brain": 0.2, "false_bright_ml": 2.0}


def flattened(runs) -> dict:
    """Has the curve flattened? Between the last two evaluations (mean over seeds), every measure moved less than
    FLAT (sensitivity 0.05, PSNR 0.2 dB, false-bright 2 mL). Fewer than two evaluations: unknown (None)."""
    if any(len(r["points"]) < 2 for r in runs):
        return {"flat": None, "moves": {}}
    moves = {k: float(np.nanmean([r["points"][-1][k] - r["points"][-2][k] for r in runs])) for k in FLAT}
    return {"flat": all(abs(v) < FLAT[k] for k, v in moves.items() if math.isfinite(v)), "moves": moves}


def weight_average_effect(results: dict) -> dict:
    """Per arm with raw-weight evaluations: for psnr_brain, false_bright_ml and qualifying_sensitivity, the mean
    absolute change between consecutive evaluations (the swing) and the mean level after the first evaluation, of
    the averaged and of the raw weights (both over all seeds)."""
    out = {}
    for name, runs in results.items():
        runs = [r for r in runs if len(r["points"]) >= 2 and all("raw" in p for p in r["points"])]
        if not runs:
            continue
        arm = {}
        for k in ("psnr_brain", "false_bright_ml", "qualifying_sensitivity"):
            def series(r, raw):
                return np.array([(p["raw"] if raw else p)[k] for p in r["points"]], float)
            sw = {raw: float(np.nanmean(np.concatenate([np.abs(np.diff(series(r, raw))) for r in runs]))) for raw in (0, 1)}
            lv = {raw: float(np.nanmean(np.concatenate([series(r, raw)[1:] for r in runs]))) for raw in (0, 1)}
            arm[k] = {"swing_ema": sw[0], "swing_raw": sw[1], "level_ema": lv[0], "level_raw": lv[1]}
        out[name] = arm
    return out


def summarise(results: dict, lut: dict, args, machine: dict, wall: float | None,
              lut_lift: dict | None = None) -> tuple[dict, str]:
    arms = {}
    for name, runs in results.items():
        finals = [r["points"][-1] for r in runs]
        arms[name] = {k: (float(np.nanmean([f[k] for f in finals])), float(np.nanstd([f[k] for f in finals])))
                      for k in ("qualifying_sensitivity", "false_bright_ml", "psnr_brain", "darker")}
        dq = [f["darker_qualifying"] for f in finals if "darker_qualifying" in f]
        if dq:
            arms[name]["darker_qualifying"] = (float(np.mean(dq)), float(np.std(dq)))
        for k in ("prob_ece",):
            vals = [f[k] for f in finals if k in f]
            if vals:
                arms[name][k] = (float(np.mean(vals)), float(np.std(vals)))
        sens2 = [f["prob_froc_2fp"]["sensitivity"] for f in finals if "prob_froc_2fp" in f]
        if sens2:
            arms[name]["prob_sensitivity_at_2fp"] = (float(np.mean(sens2)), float(np.std(sens2)))
        sensq = [f["prob_froc_2fp_qualifying"]["sensitivity"] for f in finals if "prob_froc_2fp_qualifying" in f]
        if sensq:  # the lesions the model issue counts (>= 1 mL, >= 3 HU, real ratio >= 1.3); per seed as well
            arms[name]["prob_sensitivity_at_2fp_qualifying"] = (float(np.nanmean(sensq)), float(np.nanstd(sensq)))
            arms[name]["prob_sensitivity_at_2fp_qualifying_per_seed"] = [float(v) for v in sensq]
        arms[name]["wall_s_per_run"] = float(np.mean([r.get("wall_s", float("nan")) for r in runs]))
        arms[name]["steps_reached"] = [r["points"][-1]["step"] for r in runs]
        arms[name]["flattened"] = flattened(runs)
        arms[name]["params"] = runs[0].get("params")
    arms["lut"] = {k: (lut[k], 0.0) for k in ("qualifying_sensitivity", "false_bright_ml", "psnr_brain", "darker",
                                               "darker_qualifying") if k in lut}
    if lut_lift is not None:  # the lifted table the networks start from (reference row, not an arm)
        arms["lut_lifted"] = {k: (lut_lift[k], 0.0) for k in arms["lut"] if k in lut_lift}
    run_walls = ", ".join(f"{name} " + " / ".join(f"{r.get('wall_s', float('nan')) / 60:.1f}" for r in runs) + " min"
                          for name, runs in results.items())  # a run extended to more steps: all its invocations
    lines = [f"# Learning curves ({time.strftime('%Y-%m-%d')})", "",
             f"Ran: {args.steps} steps x batch {args.batch_size} "
             f"({'crops of ' + str(args.patch_size) + ' px' if args.patch_size else 'slices'}; legacy: whole slices), "
             f"seeds {args.seeds}, evaluation every {args.eval_every} steps; base width {args.base_channels}, depth {args.depth}; "
             f"weight average {args.ema:g}, rotation +-{args.rotate_deg:g} deg, tissue prior lift {args.prior_lift_hu:g} HU, adversarial weight {args.lambda_adv:g}, "
             f"hard-negative crops {args.hard_negative_fraction:g} (legacy arm 0); "
             + (f"CT-noise augmentation up to {args.noise_augment_hu:g} HU with probability "
                f"{args.noise_augment_probability:g} (legacy arm off); " if args.noise_augment_hu else "")
             + (f"render residual bounded to +-{args.residual_bound:g} (legacy arm: no render head); "
                if args.residual_bound else "")
             + (f"hemispheric difference scaled to the case's noise (reference {args.mirror_noise_ref_hu:g} HU; legacy "
                "arm: no mirror); " if args.mirror_noise_ref_hu else "")
             + (f"lesions under {args.unseen_lesion_hu:g} HU of CT contrast left out of the losses (legacy arm: "
                "kept); " if getattr(args, "unseen_lesion_hu", 0.0) else "")
             + (f"{args.context_slices} context slice(s) on each side; "
                if getattr(args, "context_slices", 1) != 1 else "")
             + f"learning rate {args.lr:g}" + (f" cosine to x{args.lr_final_ratio:g} at step {args.steps}; "
                                             if getattr(args, "lr_schedule", "constant") == "cosine" else " constant; ")
             + f"{args.train_cases} training / {args.cal_cases} calibration / {args.test_cases} test phantoms "
             f"(seeds {TRAIN_SEED0}.., {CAL_SEED0}.., {TEST_SEED0}..); machine: "
             + (", ".join(f"{k} {v}" for k, v in machine.items()) if isinstance(machine, dict) else str(machine)) + "; "
             + (f"wall of this invocation {wall / 60:.1f} min" if wall is not None else "wall not known to --report-only (see the run's log)")
             + f"; per run, every invocation together: {run_walls}.",
             "",
             "| arm | qualifying lesions shown | darker (all lesions, sum over test set) | darker (qualifying) | false-bright mL/case | in-brain PSNR dB | prob. ECE | prob. sens. at <=2 FP/case |",
             "|---|---|---|---|---|---|---|---|"]

    def fmt(v, d=2):
        return "-" if v is None else f"{v[0]:.{d}f} +- {v[1]:.{d}f}"

    for name, a in arms.items():
        lines.append(f"| {name} | {fmt(a['qualifying_sensitivity'])} | {fmt(a['darker'], 1)} | {fmt(a.get('darker_qualifying'), 1)} | {fmt(a['false_bright_ml'], 1)} | "
                     f"{fmt(a['psnr_brain'])} | {fmt(a.get('prob_ece'), 3)} | {fmt(a.get('prob_sensitivity_at_2fp'))} |")
    lines += ["", "Steps reached and whether each curve has flattened (last two evaluations, mean over seeds; flat = "
              "sensitivity moved < 0.05, PSNR < 0.2 dB, false-bright < 2 mL):", ""]
    for name, runs in results.items():
        f = arms[name]["flattened"]
        capped = [r.get("capped_at_step") for r in runs if r.get("capped_at_step")]
        state = {None: "unknown (one evaluation)", True: "flat", False: "NOT flat"}[f["flat"]]
        lines.append(f"- {name}: steps {arms[name]['steps_reached']}"
                     + (f" (stopped by the wall cap at {capped})" if capped else "")
                     + f"; {state}" + (" - last moves " + ", ".join(f"{k} {v:+.2f}" for k, v in f["moves"].items())
                                       if f["moves"] else ""))
    swings = weight_average_effect(results)
    if swings:
        lines += ["", "Generator weight average (EMA) against the raw weights of the same runs, at the same steps "
                  "(swing = mean absolute change between consecutive evaluations, over seeds; level = mean over all "
                  "evaluations after the first):", ""]
        for name, sw in swings.items():
            lines.append(f"- {name}: " + "; ".join(
                f"{k} swing {v['swing_ema']:.2f} (raw {v['swing_raw']:.2f}), level {v['level_ema']:.2f} (raw {v['level_raw']:.2f})"
                for k, v in sw.items()))
    comp = {}
    if "jmmda" in results and "pix2pix" in results:
        def per_case(name, key):
            rows = {}
            for r in results[name]:
                for c in r["points"][-1]["per_case"]:
                    rows.setdefault(c["case"], []).append(c[key])
            return {k: float(np.nanmean(v)) if not all(np.isnan(v)) else float("nan") for k, v in rows.items()}

        seed_cases = lambda name: [{**c, "case": f"{i}/{c['case']}"}  # the i-th run of each arm paired
                                   for i, r in enumerate(results[name]) for c in r["points"][-1]["per_case"]]
        keys = ("psnr_brain", "false_bright_ml", "shown")
        by_seed = pair_by_seed(seed_cases("pix2pix"), seed_cases("jmmda"), keys)  # jmmda - pix2pix

        lines += ["", "Paired differences jmmda - pix2pix, 95 % t CI over cases (each case averaged over seeds: these runs) "
                  "and over seeds (each seed's mean difference: the recipe; the verdict comes from these with 2+ seeds):", ""]
        for key in keys:
            a, b = per_case("jmmda", key), per_case("pix2pix", key)
            ids = sorted(a)
            m, lo, hi = paired_ci([a[i] for i in ids], [b[i] for i in ids])
            _, slo, shi, n_seeds = by_seed[key]
            if n_seeds < 2:
                slo, shi = lo, hi
            verdict = "tie (CI contains 0)" if not (slo > 0 or shi < 0) else ("jmmda higher" if slo > 0 else "pix2pix higher")
            comp[key] = {"mean": m, "ci": [lo, hi], "ci_seeds": [slo, shi], "n_seeds": n_seeds, "verdict": verdict}
            lines.append(f"- {key}: {m:+.3f} [{lo:+.3f}, {hi:+.3f}] over cases; [{slo:+.3f}, {shi:+.3f}] over "
                         f"{n_seeds} seeds -> {verdict}")
    targets = []
    j = arms.get("jmmda")
    if j:
        def check(label, ok, text):
            targets.append({"target": label, "met": bool(ok), "value": text})

        check("qualifying lesions shown >= 85 % (floor 60 %)", j["qualifying_sensitivity"][0] >= 0.85,
              f"{100 * j['qualifying_sensitivity'][0]:.0f} %")
        check("no lesion darker than normal", j["darker"][0] == 0, f"{j['darker'][0]:.1f} per test set"
              + (f" ({j['darker_qualifying'][0]:.1f} of them qualifying)" if "darker_qualifying" in j else ""))
        check("false-bright <= 5 mL per case", j["false_bright_ml"][0] <= 5, f"{j['false_bright_ml'][0]:.1f} mL")
        check("in-brain PSNR >= table + 1 dB", j["psnr_brain"][0] >= lut["psnr_brain"] + 1.0,
              f"{j['psnr_brain'][0] - lut['psnr_brain']:+.2f} dB vs table")
        if "prob_sensitivity_at_2fp" in j:
            check("probability map: lesion-wise sensitivity >= 85 % at <= 2 FP/case", j["prob_sensitivity_at_2fp"][0] >= 0.85,
                  f"{100 * j['prob_sensitivity_at_2fp'][0]:.0f} %")
        if "prob_sensitivity_at_2fp_qualifying" in j:
            per_seed = " / ".join(f"{100 * v:.0f}" for v in j["prob_sensitivity_at_2fp_qualifying_per_seed"])
            check("probability map, the lesions the issue counts: sensitivity >= 85 % at <= 2 FP/case",
                  j["prob_sensitivity_at_2fp_qualifying"][0] >= 0.85,
                  f"{100 * j['prob_sensitivity_at_2fp_qualifying'][0]:.0f} % (per seed {per_seed} %)")
        if "prob_ece" in j:
            check("probability map ECE <= 0.05", j["prob_ece"][0] <= 0.05, f"{j['prob_ece'][0]:.3f}")
        lines += ["", "Targets (jmmda arm, mean over seeds):", ""]
        lines += [f"- {'MET' if t['met'] else 'MISSED'}: {t['target']} - {t['value']}" for t in targets]
    summary = {"arms": arms, "jmmda_vs_pix2pix": comp, "targets": targets, "weight_average": swings}
    return summary, "\n".join(lines) + "\n"


def plot(results, lut, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("qualifying_sensitivity", "qualifying lesions shown"), ("false_bright_ml", "false-bright mL / case"),
            ("psnr_brain", "in-brain PSNR dB")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (k, label) in zip(axes, keys):
        for i, (name, runs) in enumerate(results.items()):
            for j, r in enumerate(runs):
                steps = [p["step"] for p in r["points"]]
                ax.plot(steps, [p[k] for p in r["points"]], color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
        ax.axhline(lut[k], color="k", ls="--", label="lookup table")
        ax.set_xlabel("optimiser steps")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    fig.suptitle("SYNTHETIC-DWI models on held-out phantoms (one line per seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--arms", default=ALL_ARMS)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=600,
                   help="steps per run; more than a finished run in --out had extends it (constant learning rate)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=80)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="cosine: from --lr down to --lr x --lr-final-ratio at --steps (such a run cannot be extended)")
    p.add_argument("--lr-final-ratio", type=float, default=0.05)
    p.add_argument("--ema", type=float, default=0.999,
                   help="generator weight average decay (0: off); the raw weights are evaluated beside it")
    p.add_argument("--rotate-deg", type=float, default=10.0, help="in-plane rotation augmentation (0: off)")
    p.add_argument("--prior-lift-hu", type=float, default=10.0,
                   help="tissue prior's contralateral lift in HU (0: the plain table; the lut arm is always plain)")
    p.add_argument("--lambda-adv", type=float, default=1.0,
                   help="weight of the adversarial loss (the unet_prior arm: always 0)")
    p.add_argument("--hard-negative-fraction", type=float, default=0.0,
                   help="this fraction of the training crops centred on normal brain >= 3 HU darker than its mirror "
                        "image (TrainConfig.hard_negative_fraction; the legacy arm: 0)")
    p.add_argument("--noise-augment-hu", type=float, default=0.0,
                   help="CT-noise augmentation up to this level (phantom ct_noise_hu scale; TrainConfig.noise_augment_hu; "
                        "the legacy arm: off)")
    p.add_argument("--noise-augment-probability", type=float, default=0.5)
    p.add_argument("--unseen-lesion-hu", type=float, default=0.0,
                   help="lesions whose CT contrast is below this many HU left out of every loss but the adversarial "
                        "one (TrainConfig.unseen_lesion_hu; the legacy arm: off; default 0: off)")
    p.add_argument("--residual-bound", type=float, default=0.0,
                   help="soft bound of the render head's residual (GeneratorConfig.residual_bound; 0: unbounded)")
    p.add_argument("--mirror-noise-ref-hu", type=float, default=None,
                   help="scale the CT-minus-mirror channels to the case's noise, this many HU as the reference "
                        "(PreprocessConfig.mirror_noise_ref_hu; default: not scaled)")
    p.add_argument("--context-slices", type=int, default=1,
                   help="2.5-D input: adjacent slices on each side stacked as channels, every arm "
                        "(PreprocessConfig.context_slices; 0: single slices)")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--train-cases", type=int, default=60)
    p.add_argument("--cal-cases", type=int, default=8)
    p.add_argument("--test-cases", type=int, default=16)
    p.add_argument("--workers", type=int, default=1, help="runs (and phantom builders) in parallel processes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stated wall cap per run (training + evaluations): the first evaluation after it is the run's "
                        "last (with the probability metrics), and the report names the step each run stopped at")
    p.add_argument("--report-only", action="store_true",
                   help="no training: summarise the curve.json files and lut.json already in --out (an interrupted "
                        "run's partial curves are reported as partial, with the steps they reached)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.report_only:
        saved = out / "run_args.json"  # the header states what the interrupted run was asked to do, not defaults
        if saved.exists():
            args = argparse.Namespace(**{**SETTINGS_BEFORE_THEY_EXISTED, **json.loads(saved.read_text()),
                                         "report_only": True})
        return report_only(args, out)
    from compare_models import machine as machine_info  # same hardware record as the main benchmark

    from jmmda_model.checkpoint import write_json_atomic

    mach = machine_info()
    write_json_atomic(mach, out / "machine.json")
    import pickle

    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.prior import TissuePrior

    # the phantom file names the seeds it holds: a folder reused with other case counts builds its own set
    if not 0 <= args.context_slices <= 4:
        p.error(f"--context-slices {args.context_slices} is outside 0..4")
    data_path = out / f"phantoms_{args.train_cases}_{args.cal_cases}_{args.test_cases}.pkl"
    prev = out / "run_args.json"
    if prev.exists():  # resuming is only sound with the same recipe; other settings need another --out
        keys = ("steps", "eval_every", "batch_size", "patch_size", "lr", "base_channels", "depth", "heads",
                "train_cases", "cal_cases", "test_cases", "ema", "rotate_deg", "prior_lift_hu", "lambda_adv",
                "lr_schedule", "lr_final_ratio", "hard_negative_fraction", "noise_augment_hu", "mirror_noise_ref_hu",
                "noise_augment_probability", "residual_bound", "context_slices")
        old = {**SETTINGS_BEFORE_THEY_EXISTED, **json.loads(prev.read_text())}
        # more steps extend the runs, with a constant learning rate only (a cosine schedule is set by --steps)
        diff = [k for k in keys if k in old and old[k] != getattr(args, k)
                and not (k == "steps" and getattr(args, k) > old[k] and args.lr_schedule == "constant")]
        if diff:
            p.error(f"{out} holds a run with other settings ({', '.join(f'{k}={old[k]}' for k in diff)}); "
                    "use another --out or the same settings to resume")
    write_json_atomic({k: v for k, v in vars(args).items() if k != "report_only"}, out / "run_args.json")
    if not data_path.exists():
        pre = PreprocessConfig()
        train = make_cases(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_cases), pre, args.workers)
        cal = make_cases(range(CAL_SEED0, CAL_SEED0 + args.cal_cases), pre, args.workers)
        test = make_cases(range(TEST_SEED0, TEST_SEED0 + args.test_cases), pre, args.workers)
        tmp = data_path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            pickle.dump((train, cal, test), f)
        os.replace(tmp, data_path)
        print(f"built {len(train) + len(cal) + len(test)} phantoms in {time.time() - t0:.0f} s", flush=True)
    with open(data_path, "rb") as f:
        train, cal, test = pickle.load(f)
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in NETWORK_ARMS and a != "lut"]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {ALL_ARMS}")
    table = TissuePrior().fit(train)
    lut = evaluate(lambda lc: (table.predict(lc.ct_hu, lc.brain, lc.spacing_zyx), None), test)
    write_json_atomic({k: v for k, v in lut.items() if k != "per_case"}, out / "lut.json")
    print(f"[lut] sens {lut['qualifying_sensitivity']:.2f} ({lut['qualifying_lesions']}) darker {lut['darker']} "
          f"false-bright {lut['false_bright_ml']:.1f} mL PSNR {lut['psnr_brain']:.2f}", flush=True)
    lut_lift = None
    if args.prior_lift_hu > 0:  # the table the networks start from, on its own (a reference, not an arm)
        lifted = TissuePrior(mirror_lift_hu=args.prior_lift_hu).fit(train)
        lut_lift = evaluate(lambda lc: (lifted.predict(lc.ct_hu, lc.brain, lc.spacing_zyx, lc.mirror_hu), None), test)
        write_json_atomic({k: v for k, v in lut_lift.items() if k != "per_case"}, out / "lut_lift.json")
        print(f"[lut lifted {args.prior_lift_hu:g} HU] sens {lut_lift['qualifying_sensitivity']:.2f} darker "
              f"{lut_lift['darker']} ({lut_lift['darker_qualifying']} qualifying) false-bright "
              f"{lut_lift['false_bright_ml']:.1f} mL PSNR {lut_lift['psnr_brain']:.2f}", flush=True)
    # each run loads the phantom file itself: this process lets go of its copy first (with hundreds of training
    # phantoms it would otherwise hold one more copy of the data than there are runs)
    del train, cal, test
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(a, s, args, str(data_path), str(out)) for s in seeds for a in arms if a != "lut"]
    results: dict[str, list] = {a: [] for a in arms if a != "lut"}
    if args.workers > 1:
        from multiprocessing import get_context

        with get_context("spawn").Pool(args.workers) as pool:
            for name, seed, curve in pool.imap_unordered(_run_job, jobs):
                results[name].append(curve)
    else:
        for job in jobs:
            name, seed, curve = _run_job(job)
            results[name].append(curve)
    summary, md = summarise(results, lut, args, mach, time.time() - t0, lut_lift)
    plot(results, lut, out / "learning_curves.png")
    write_json_atomic({"args": vars(args), "machine": mach, "lut": {k: v for k, v in lut.items() if k != "per_case"},
                       "runs": results, "summary": summary, "wall_s": time.time() - t0}, out / "curves.json")
    (out / "curves.md").write_text(md)
    print(md)
    return 0


def report_only(args, out: Path) -> int:
    results: dict[str, list] = {}
    for f in sorted(out.glob("*_s*/curve.json")):
        name = f.parent.name.rsplit("_s", 1)[0]
        c = json.loads(f.read_text())
        if c["points"]:
            results.setdefault(name, []).append(c)
    lut = json.loads((out / "lut.json").read_text())
    machine = json.loads((out / "machine.json").read_text()) if (out / "machine.json").exists() else {}
    lift_path = out / "lut_lift.json"
    summary, md = summarise(results, lut, args, machine, None,
                            json.loads(lift_path.read_text()) if lift_path.exists() else None)
    partial = {n: [r["points"][-1]["step"] for r in runs if not r.get("done")] for n, runs in results.items()}
    partial = {n: v for n, v in partial.items() if v}
    if partial:
        md += ("\nPARTIAL: these runs did not reach --steps; their last evaluation is reported (steps reached): "
               + "; ".join(f"{n}: {v}" for n, v in partial.items()) + "\n")
    plot(results, lut, out / "learning_curves.png")
    (out / "curves.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
