#!/usr/bin/env python
"""Trains the shipped demo model with the lesion recipe on phantoms built in memory, and writes its model card.

    python benchmarks/train_demo.py --out runs/demo --steps 6000 --batch-size 32 --workers 8

Training phantoms: seeds 100.. (``--train-cases``); validation (model selection by lesion sensitivity, then
temperature calibration of the lesion probability): seeds 40000.. (``--val-cases``). The committed sample cases
(seeds 0..7) and the benchmark's seeds are never used, so the demo tests on the sample cases are held out.
The model card records the exact settings, steps, wall time and device.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learning_curves as lcb

TRAIN_SEED0, VAL_SEED0 = 100, 40000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=80)
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--train-cases", type=int, default=160)
    p.add_argument("--val-cases", type=int, default=12)
    p.add_argument("--max-pitch-deg", type=float, default=4.0,
                   help="training phantoms' head pitch drawn in +- this many degrees (validation: the default 4)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--hard-negative-fraction", type=float, default=0.0,
                   help="crops centred on normal brain >= 3 HU darker than its mirror image (TrainConfig; default 0)")
    p.add_argument("--noise-augment-hu", type=float, default=0.0,
                   help="CT-noise augmentation up to this level, phantom ct_noise_hu scale (TrainConfig; default 0: off)")
    p.add_argument("--residual-bound", type=float, default=0.0,
                   help="soft bound of the render head's residual (GeneratorConfig.residual_bound; default 0: unbounded)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop training after this many minutes (the best validated epoch is kept and carded)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from jmmda_model import checkpoint as ckpt_io
    from jmmda_model.networks import GeneratorConfig
    from jmmda_model.preprocess import PreprocessConfig
    from jmmda_model.trainer import TrainConfig, Trainer

    t0 = time.time()
    pre = PreprocessConfig()
    from jmmda_model.phantom import PhantomConfig

    rot = (args.max_pitch_deg, *PhantomConfig().max_rotation_deg[1:])
    train = lcb.make_cases(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_cases), pre, args.workers,
                           {"max_rotation_deg": rot})
    val = lcb.make_cases(range(VAL_SEED0, VAL_SEED0 + args.val_cases), pre, args.workers)
    print(f"built {len(train) + len(val)} phantoms in {time.time() - t0:.0f} s", flush=True)
    import threading

    import numpy as np

    slices = sum(int((c.brain.reshape(c.brain.shape[0], -1).mean(1) >= pre.min_brain_fraction).sum()) for c in train)
    per_epoch = max(1, slices // args.batch_size)  # validation every ~val_every steps, not every (short) epoch
    gen = GeneratorConfig(base_channels=args.base_channels, depth=3, heads=4, residual_prior=True,
                          residual_bound=args.residual_bound)
    cfg = TrainConfig(generator=gen.to_dict(), preprocess=pre.to_dict(), epochs=10**6, max_steps=args.steps,
                      batch_size=args.batch_size, patch_size=args.patch_size,
                      hard_negative_fraction=args.hard_negative_fraction, noise_augment_hu=args.noise_augment_hu,
                      lr_g=args.lr, lr_d=args.lr, seed=0, progress=False, tensorboard=False, device=args.device,
                      select_metric="lesion", val_every=max(1, int(np.ceil(args.val_every / per_epoch))))
    trainer = Trainer(cfg, args.out)
    if args.max_minutes:
        threading.Timer(args.max_minutes * 60, trainer.stop_event.set).start()
    summary = trainer.fit_loaded(train, val, resume=True)
    dev = torch.cuda.get_device_name(0) if trainer.device.type == "cuda" else "cpu"
    model = Path(args.out) / "model.pt"
    ck = ckpt_io.load(model)
    best = next(r for r in reversed(summary["history"]) if r.get("best"))
    ck["model_card"] = {  # the trainer's card (its "weights": averaged or raw) with the demo's own facts
        **ck.get("model_card", {}),
        "name": "JMMDA-GAN CT-to-DWI demo (lesion recipe)",
        "output": "SYNTHETIC DWI - not for diagnosis",
        "intended_use": "research and software demonstration; synthetic images must not be used for diagnosis",
        "phantom_trained": True,
        "training_cases": [c.id for c in train],
        "training_data": f"{args.train_cases} phantoms, seeds {TRAIN_SEED0}..{TRAIN_SEED0 + args.train_cases - 1} "
                         f"(1.8 x 1.8 x 5 mm, head pitch +-{rot[0]:g} deg, roll +-{rot[1]:g}, yaw +-{rot[2]:g}); validation / calibration: {args.val_cases} phantoms, seeds "
                         f"{VAL_SEED0}..{VAL_SEED0 + args.val_cases - 1}; the sample cases (seeds 0-7) are held out",
        "recipe": "mirror-difference channels (mid-sagittal plane), tissue prior + residual"
                  + (f" bounded to +-{args.residual_bound:g}" if args.residual_bound else "") + " (prior lifted up to "
                  f"{cfg.prior_mirror_lift_hu:g} HU towards the mirror image), lesion-probability head "
                  "(BCE + Dice; temperature-calibrated on the validation phantoms), lesion-centred 80 px crops "
                  "(1/3 on lesion voxels" + (f", {cfg.hard_negative_fraction:.2g} on normal brain >= 3 HU darker than its "
                                             "mirror image" if cfg.hard_negative_fraction else "")
                  + (f"; CT noise added up to {cfg.noise_augment_hu:g} HU (phantom scale) to "
                     f"{cfg.noise_augment_probability:.0%} of them" if cfg.noise_augment_hu else "")
                  + "), LSGAN + brain-weighted L1 + lesion contrast; "
                  f"generator weight average (EMA {cfg.ema_decay}) validated and exported; in-plane rotation "
                  f"augmentation +-{cfg.rotate_deg:g} deg with sub-pixel shifts (p {cfg.rotate_probability:g}), so "
                  "inference turns each CT to the canonical pose",
        "training": f"{summary['global_step']} steps x batch {args.batch_size}, lr {args.lr}, seed 0, on {dev}"
                    f"{f' ({torch.get_num_threads()} threads)' if dev == 'cpu' else ''}, "
                    f"{(time.time() - t0) / 60:.1f} min wall incl. phantom building",
        "selected_epoch": best["epoch"], "selected_step": best["step"],
        "validation_at_selection": {k: best["val"][k] for k in ("psnr_brain", "lesion_sensitivity", "lesions_darker",
                                                                  "false_bright_ml", "prob_ece", "prob_sensitivity_at_2fp")
                                    if k in best["val"]},
        "limitations": "trained and calibrated on phantoms only; a normal-looking synthetic DWI or a low infarct "
                       "probability never rules out ischaemia",
    }
    ckpt_io.atomic_save(ck, model)
    print(json.dumps(ck["model_card"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
