"""Conditional-GAN trainer for JMMDA-GAN (and the pix2pix baseline).

* losses: adversarial (LSGAN by default, or vanilla BCE) + lambda * L1 weighted inside the brain,
  with extra weight on lesions and a small weight on the background;
* progress bar (tqdm), TensorBoard scalars and sample images;
* checkpoints written atomically every epoch (``checkpoints/last.pt``: full state to resume), the best epoch by
  the validation score (``select_metric``; the better of the raw and the averaged weights) exported as
  ``model.pt`` (inference-only);
* resumable: epoch order and augmentation derive from (seed, epoch), so an interrupted and resumed
  run reproduces the uninterrupted one on the same device;
* stoppable: a ``threading.Event``; a stop mid-epoch keeps the last completed epoch's state;
* distributed: under torchrun (``jmmda train --nproc-per-node N``, see ``distributed.py``) generator and
  discriminator are wrapped in DistributedDataParallel, a DistributedSampler deals out the global epoch order,
  and rank 0 alone writes; the result equals one process with the same global batch.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import checkpoint as ckpt_io
from .data import Case, SliceDataset, case_input, check_crop_fractions, check_noise_augment, check_unseen_lesion_hu, load_case
from .distributed import global_mean, global_sum, rank_and_world
from .inference import pick_device, predict_slices
from .metrics import (
    calibrated_probability,
    evaluate_volume,
    fit_temperature,
    froc_summary,
    operating_threshold,
    probability_metrics,
    qualifying,
)
from .networks import (
    GeneratorConfig,
    PatchDiscriminator,
    build_generator,
    strict_from_dict,
)
from .preprocess import SLAB_MM_RANGE, PreprocessConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    generator: dict = field(default_factory=lambda: GeneratorConfig().to_dict())
    preprocess: dict = field(default_factory=lambda: PreprocessConfig().to_dict())
    epochs: int = 50
    batch_size: int = 8
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple = (0.5, 0.999)
    gan_mode: str = "lsgan"  # or "vanilla"
    lambda_l1: float = 100.0
    lambda_adv: float = 1.0
    lesion_weight: float = 4.0
    background_weight: float = 0.1
    disc_channels: int = 64
    disc_layers: int = 3
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    val_every: int = 1
    max_steps_per_epoch: int | None = None
    #: stop after exactly this many optimiser steps in total (None: run all epochs)
    max_steps: int | None = None
    #: lesion-aware training: slices with lesion appear this many times per epoch (1 = plain sampling)
    lesion_oversample: int = 3
    #: weight of the lesion-contrast loss |(lesion - normal)_synthetic - (lesion - normal)_real| per slice
    lambda_contrast: float = 10.0
    #: weight of the auxiliary lesion-probability loss (generators built with ``aux_lesion``)
    lambda_aux: float = 1.0
    #: which validation epoch becomes model.pt: "psnr_brain", or "lesion" (lesion sensitivity first, lesions
    #: rendered darker than normal and false-bright brain penalised, in-brain PSNR breaking ties; see _score)
    select_metric: str = "lesion"
    #: train on square crops of this many pixels (None: whole slices); a ``lesion_patch_fraction`` of them is
    #: centred on lesion voxels (then slices are not oversampled: ``lesion_oversample`` applies to whole slices)
    patch_size: int | None = 80
    lesion_patch_fraction: float = 1 / 3
    #: a further fraction of the crops centred on hard negatives: normal brain at least 3 HU below its mirror image
    #: (data.hard_negative_voxels), so the lesion head learns normal asymmetry; 0: brain crops as before
    hard_negative_fraction: float = 0.0
    #: CT-noise augmentation (data.add_ct_noise): with probability ``noise_augment_probability`` a crop's CT gets more
    #: noise of the phantoms' texture at a level drawn from 0..noise_augment_hu (the phantom generator's ``ct_noise_hu``
    #: scale; its cases hold 2.5-6), the mirror's noise drawn apart; 0: off, every sample as before
    noise_augment_hu: float = 0.0
    noise_augment_probability: float = 0.5
    #: lesions whose CT contrast (ring of normal brain minus lesion mean, the issue's measure) is below this many HU
    #: are left out of every loss but the adversarial one (``data.unseen_lesions``): not painted, not called normal.
    #: 0 (off) trains exactly as before
    unseen_lesion_hu: float = 0.0
    #: weight of the soft Dice term of the lesion-probability loss (BCE + Dice)
    lambda_dice: float = 1.0
    #: exponential moving average of the generator's weights (0: off), kept beside the raw weights (which go on
    #: training). At each validation both are scored and the better becomes model.pt (see _validate_and_choose).
    #: The effective decay ramps up as min(ema_decay, (1 + step) / (10 + step)), so early averages are not stale.
    ema_decay: float = 0.999
    #: in-plane rotation augmentation: each training crop is turned by a random angle in +-this many degrees and
    #: shifted by a sub-pixel amount (interpolated), with probability ``rotate_probability``. Models trained so
    #: record ``canonical_rotation`` in their preprocessing: inference then turns every CT to the canonical pose
    #: (mid-sagittal line vertical), which interpolates the slices as this augmentation does.
    rotate_deg: float = 10.0
    rotate_probability: float = 0.75
    #: tissue prior's contralateral lift (prior.TissuePrior ``mirror_lift_hu``): voxels up to this many HU below their
    #: mirror image are binned at the mirror's HU, so an early infarct's hypodensity is not mapped to a darker DWI
    #: (0: off, the plain table). Used with the mirror channels only.
    prior_mirror_lift_hu: float = 10.0
    #: learning rate of both optimisers against the step: "constant", or "cosine" (half a cosine from lr_g / lr_d
    #: down to lr * lr_final_ratio at the last step: max_steps, or all epochs). A function of the step alone, so a
    #: resumed run follows the same schedule.
    lr_schedule: str = "constant"
    lr_final_ratio: float = 0.05
    tensorboard: bool = True
    progress: bool = True

    LR_SCHEDULES = ("constant", "cosine")

    def __post_init__(self):
        if self.lr_schedule not in self.LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r}: use one of {', '.join(self.LR_SCHEDULES)}")
        if not 0.0 <= float(self.lr_final_ratio) <= 1.0:
            raise ValueError(f"lr_final_ratio {self.lr_final_ratio}: must be within 0..1")
        check_crop_fractions(self.lesion_patch_fraction, self.hard_negative_fraction, self.patch_size)
        check_unseen_lesion_hu(self.unseen_lesion_hu)
        check_noise_augment(self.noise_augment_hu, self.noise_augment_probability,
                            (self.preprocess or {}).get("mirror_noise_ref_hu"))
        if float(self.noise_augment_hu) > 0 and not self.augment:
            raise ValueError("noise_augment_hu needs augmentation on (augment=True): it is an augmentation")

    def lr_factor(self, step: int, total: int) -> float:
        """Learning-rate multiplier for optimiser step ``step`` (0-based) of ``total``."""
        if self.lr_schedule == "constant" or total <= 1:
            return 1.0
        t = min(max(step, 0), total - 1) / (total - 1)
        r = float(self.lr_final_ratio)
        return r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * t))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return strict_from_dict(cls, d, "training config")


def weighted_l1(pred, target, brain, lesion, lesion_weight: float, background_weight: float, keep=None):
    """Brain/lesion-weighted mean absolute error over the global batch: in a DDP run the weight sum is
    summed over ranks (and the local term scaled by the world size, which DDP's gradient mean undoes).
    ``keep``: 0 where voxels are left out (lesions the CT does not show), 1 elsewhere."""
    w = background_weight + (1.0 - background_weight) * brain + lesion_weight * lesion
    if keep is not None:
        w = w * keep
    world = rank_and_world()[1]
    return (w * (pred - target).abs()).sum() * world / global_sum(w.sum())


def lesion_contrast_loss(pred, target, brain, lesion):
    """Mean over slices with lesion of |(mean lesion - mean normal brain) of pred - the same of target|:
    penalises a lesion rendered less (or more) bright than the real one, whatever its size."""
    normal = brain * (1 - lesion)
    dims = (1, 2, 3)
    n_les, n_norm = lesion.sum(dims), normal.sum(dims)
    has = (n_les > 0) & (n_norm > 0)
    n_has = global_sum(has.sum().float())  # slices with lesion in the global batch (all ranks)
    if float(n_has) == 0:
        return pred.sum() * 0.0
    def delta(img):
        return (img * lesion).sum(dims) / n_les.clamp(min=1) - (img * normal).sum(dims) / n_norm.clamp(min=1)
    return (delta(pred) - delta(target)).abs()[has].sum() * rank_and_world()[1] / n_has


def soft_dice_loss(prob, target, smooth: float = 1.0):
    """Mean over samples of 1 - (2|P.T| + s) / (|P| + |T| + s): per sample, so a DDP split of the batch over
    ranks gives the same mean (equal shares) and gradient; a sample without lesion pushes P towards 0."""
    dims = (1, 2, 3)
    inter = (prob * target).sum(dims)
    return (1.0 - (2.0 * inter + smooth) / (prob.sum(dims) + target.sum(dims) + smooth)).mean()


def _gan_loss(logits, real: bool, mode: str):
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


class StopTraining(Exception):
    pass


class Trainer:
    def __init__(self, cfg: TrainConfig, out_dir: str | Path, stop_event: threading.Event | None = None,
                 on_epoch: Callable[[dict], None] | None = None):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.stop_event = stop_event or threading.Event()
        self.on_epoch = on_epoch
        self.rank, self.world = rank_and_world()
        self.device = pick_device(cfg.device)
        if self.world > 1 and self.device.type == "cuda":  # one GPU per process (torchrun sets it)
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.amp = cfg.amp and self.device.type == "cuda"
        self.pre = PreprocessConfig.from_dict(cfg.preprocess)
        # a model trained with rotation augmentation is fed the canonical (turned) pose at inference
        self.pre.canonical_rotation = bool(cfg.augment and cfg.rotate_deg > 0 and cfg.rotate_probability > 0)
        if cfg.hard_negative_fraction > 0 and not self.pre.mirror_channels:
            raise ValueError("hard_negative_fraction needs the hemispheric comparison (preprocessing mirror_channels): "
                             "hard negatives are normal brain darker than its mirror image")
        # the generator's CT channels follow from the preprocessing (windows x 2.5-D slices x mirror)
        self.gcfg = dataclasses.replace(GeneratorConfig.from_dict(cfg.generator), ct_channels=self.pre.input_channels)
        if not self.gcfg.residual_prior:  # the prior channel exists only for generators that use it
            self.pre.tissue_prior = None
        torch.manual_seed(cfg.seed)
        self.G = build_generator(self.gcfg).to(self.device)
        # the averaged generator (validated, selected, exported); the plain G when the average is off
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if cfg.ema_decay else None
        self.D = PatchDiscriminator(self.gcfg.input_channels + 1, cfg.disc_channels, cfg.disc_layers).to(self.device)
        # the modules trained: DDP wrappers in a distributed run (checkpoints keep the plain modules' weights)
        self.G_train, self.D_train = self.G, self.D
        if self.world > 1:
            if cfg.batch_size % self.world:
                raise ValueError(f"global batch size {cfg.batch_size} is not a multiple of the {self.world} processes")
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train = DistributedDataParallel(self.G, device_ids=ids)
            self.D_train = DistributedDataParallel(self.D, device_ids=ids)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=tuple(cfg.betas))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch = 0
        self.global_step = 0
        self.best = -math.inf
        self.history: list[dict] = []
        #: per-step losses [step, loss_g, loss_d, loss_l1] for the training page, thinned past STEP_LOG_MAX points
        self.step_log: list[list[float]] = []
        self._t_start: float | None = None  # progress / ETA bookkeeping (see _progress)
        # temperature of the lesion probability: fitted at each validation, kept with the selected epoch
        self._val_calibration: dict | None = None
        self.calibration: dict | None = None
        self.ckpt_dir = self.out / "checkpoints"

    @property
    def input_channels(self) -> int:
        """Channels of the generator's input: CT channels, the brain mask (and the tissue prior)."""
        return self.gcfg.input_channels

    @property
    def G_eval(self):
        """The generator that is validated, selected and exported: the weight average when it is on."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        d = min(float(self.cfg.ema_decay), (1.0 + self.global_step) / (10.0 + self.global_step))
        ema, raw = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema, raw, 1.0 - d)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    @property
    def has_lesion_head(self) -> bool:
        return self.gcfg.lesion_logits

    @property
    def mask_channel(self) -> int:
        return self.gcfg.ct_channels

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        return {
            "format": ckpt_io.FORMAT,
            "version": ckpt_io.VERSION,
            "generator_config": self.gcfg.to_dict(),
            "preprocess": self.pre.to_dict(),
            "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.cfg).items()},
            # "generator" is the model to use (the average when on); "generator_train" the raw weights to resume
            "generator": self.G_eval.state_dict(),
            **({"generator_train": self.G.state_dict()} if self.G_ema is not None else {}),
            "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_metric": self.best,
            "history": self.history,
            "step_log": self.step_log,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            **({"lesion_calibration": self.calibration} if self.calibration else {}),
        }

    def resume(self, path: str | Path) -> bool:
        ck = ckpt_io.load(path)
        if GeneratorConfig.from_dict(ck["generator_config"]).to_dict() != self.gcfg.to_dict():
            raise ckpt_io.CheckpointError(f"cannot resume from {path}: it has a different generator configuration")
        self.G.load_state_dict(ck.get("generator_train", ck["generator"]))
        self._keep_prior(ck)
        if self.G_ema is not None:
            self.G_ema.load_state_dict(ck["generator"])
        if "discriminator" in ck:
            self.D.load_state_dict(ck["discriminator"])
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_d.load_state_dict(ck["opt_d"])
            self.epoch = int(ck["epoch"])
            self.global_step = int(ck["global_step"])
            self.best = float(ck.get("best_metric", -math.inf))
            self.history = list(ck.get("history", []))
            self.step_log = [list(x) for x in ck.get("step_log", [])]
        return True

    # ------------------------------------------------------------------ training
    def _validate(self, val_cases, net=None, inputs=None) -> tuple[dict, dict | None]:
        """Validation metrics of ``net`` (default: the averaged weights) and its temperature fit (None without a
        lesion head). ``inputs``: the cases' model inputs, when already built."""
        net = net if net is not None else self.G_eval
        inputs = inputs if inputs is not None else [case_input(c, self.pre) for c in val_cases]
        per_case, logits, cal = [], [], None
        for c, x in zip(val_cases, inputs):
            y, lg = predict_slices(net, x, self.device, amp=self.amp, with_logits=True)
            if self.pre.mask_output:
                y = y * c.brain
            per_case.append(evaluate_volume(y, c.dwi, c.brain, c.lesion, c.spacing_zyx, ct_hu=c.ct_hu,
                                            target_unclipped=c.dwi_unclipped))
            logits.append(lg)
        prob = {}
        if self.has_lesion_head and logits[0] is not None:
            # temperature scaling of the lesion probability on the validation cases (in-brain voxels)
            t = fit_temperature([lg[c.brain > 0] for lg, c in zip(logits, val_cases)],
                                [c.lesion[c.brain > 0] for c in val_cases])
            cal = {"temperature": t, "fitted_on": [c.id for c in val_cases], "epoch": self.epoch}
            pm = [probability_metrics(calibrated_probability(lg, t), c.lesion, c.brain, c.spacing_zyx,
                                      counted=[qualifying(x) for x in m["lesion_detail"]])
                  for lg, c, m in zip(logits, val_cases, per_case)]
            op = operating_threshold(pm)  # the threshold a viewer starts from (the suspected-infarct outline)
            if op is not None:
                cal["operating_point"] = op
            prob = {"prob_ece": float(np.mean([m["ece"] for m in pm])), "prob_temperature": float(t),
                    "prob_sensitivity_at_2fp": froc_summary(pm, 2.0)["sensitivity"],
                    "prob_sensitivity_at_2fp_qualifying": froc_summary(pm, 2.0, counted_only=True)["sensitivity"]}
        lesions = [x for m in per_case for x in m.pop("lesion_detail")]
        keys = [k for k in per_case[0] if k not in ("superpixels", "lesions_shown", "lesions_total", "lesions_darker")]
        out = {k: float(np.nanmean([m[k] for m in per_case])) if not all(np.isnan(m[k]) for m in per_case) else float("nan") for k in keys}
        out["lesion_sensitivity"] = float(np.mean([x["shown"] for x in lesions])) if lesions else float("nan")
        out["lesions_darker"] = float(sum(x["darker"] for x in lesions))
        out["lesions_total"] = float(len(lesions))
        out.update(prob)
        return out, cal

    def _score(self, vm: dict) -> float:
        """Validation score that selects model.pt: in-brain PSNR, or with ``select_metric="lesion"`` lesion
        sensitivity first (100 points), each lesion rendered darker than normal -10, each mL of false-bright brain
        per case -0.5, in-brain PSNR breaking ties."""
        if self.cfg.select_metric != "lesion":
            return vm["psnr_brain"]
        sens = vm["lesion_sensitivity"] if math.isfinite(vm["lesion_sensitivity"]) else 0.0
        fb = vm.get("false_bright_ml", 0.0)
        return 100.0 * sens - 10.0 * vm["lesions_darker"] - 0.5 * (fb if math.isfinite(fb) else 0.0) + vm["psnr_brain"]

    def _validate_and_choose(self, val_cases) -> tuple[dict, str]:
        """Validates the averaged weights and, when the average is on, the raw weights too; returns the better
        one's metrics and which ("average" or "raw"). Measured on the lesion recipe (3 seeds, 1000 CPU steps) the
        average swung less between evaluations but lagged the raw weights (false-bright 13.7 vs 6.4 mL per case),
        so neither is assumed: validation decides, each epoch."""
        inputs = [case_input(c, self.pre) for c in val_cases]  # built once for both weight sets
        vm, cal = self._validate(val_cases, inputs=inputs)
        chosen = "average" if self.G_ema is not None else "raw"
        if self.G_ema is not None:
            raw, raw_cal = self._validate(val_cases, self.G, inputs)
            if self._score(raw) > self._score(vm):
                vm, cal, chosen = raw, raw_cal, "raw"
        self._val_calibration = cal
        self._sample(val_cases, self.G if chosen == "raw" else self.G_eval)  # with this epoch's temperature
        return vm, chosen

    def _sample(self, val_cases, net=None) -> None:
        """samples/epoch_NNN.png and samples/latest.png: CT | real DWI | SYNTHETIC DWI through the largest lesion
        of the first validation case that has one (else through the most brain)."""
        from .report import sample_strip

        c = next((v for v in val_cases if v.lesion.any()), val_cases[0])
        per_slice = (c.lesion if c.lesion.any() else c.brain).reshape(c.brain.shape[0], -1).sum(1)
        k = int(per_slice.argmax())
        y, lg = predict_slices(net if net is not None else self.G_eval, case_input(c, self.pre)[k : k + 1], self.device, amp=self.amp, with_logits=True)
        prob = None
        if lg is not None:
            prob = calibrated_probability(lg[0], (self._val_calibration or {}).get("temperature", 1.0)) * c.brain[k]
        img = sample_strip(c.ct_hu[k], c.dwi[k], y[0] * c.brain[k], f"{c.id} slice {k}  epoch {self.epoch}",
                           lesion=c.lesion[k], prob=prob)
        folder = self.out / "samples"
        folder.mkdir(exist_ok=True)
        for name in (f"epoch_{self.epoch:03d}.png", "latest.png"):
            tmp = folder / f".{name}.{os.getpid()}.tmp.png"
            img.save(tmp)
            os.replace(tmp, folder / name)

    def fit(self, train: list[Case], val: list[Case] | None = None, resume: bool = True,
            init_from: str | Path | None = None) -> dict:
        """Trains up to ``cfg.epochs``. ``resume``: continue from ``checkpoints/last.pt`` when present;
        ``init_from``: otherwise start the generator from this checkpoint (fine-tuning)."""
        train_loaded = [load_case(c, self.pre) for c in train]
        val_loaded = [load_case(c, self.pre) for c in (val or [])]
        return self.fit_loaded(train_loaded, val_loaded, resume=resume, init_from=init_from)

    def fit_loaded(self, train_loaded: list, val_loaded: list, resume: bool = True,
                   init_from: str | Path | None = None) -> dict:
        """``fit`` on cases already loaded (``data.LoadedCase``, with their mirror images when the preprocessing
        uses them): the benchmark builds phantoms in memory."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        last = self.ckpt_dir / "last.pt"
        if resume and last.exists():
            self.resume(last)
            log.info("resumed from %s at epoch %d", last, self.epoch)
        elif init_from is not None:
            ck = ckpt_io.load(init_from)
            if GeneratorConfig.from_dict(ck["generator_config"]).to_dict() != self.gcfg.to_dict():
                raise ckpt_io.CheckpointError(f"cannot fine-tune from {Path(init_from).name}: different generator configuration")
            self.G.load_state_dict(ck["generator"])
            self._keep_prior(ck)
            if self.G_ema is not None:
                self.G_ema.load_state_dict(ck["generator"])
            log.info("generator initialised from %s", init_from)
        train = train_loaded
        self.prepare(train_loaded)
        ds = SliceDataset(train_loaded, self.pre, self.G.size_divisor, augment=cfg.augment, patch_size=cfg.patch_size,
                          lesion_patch_fraction=cfg.lesion_patch_fraction,
                          rotate_deg=cfg.rotate_deg if self.pre.canonical_rotation else 0.0,
                          rotate_probability=cfg.rotate_probability, hard_negative_fraction=cfg.hard_negative_fraction,
                          noise_augment_hu=cfg.noise_augment_hu, unseen_lesion_hu=cfg.unseen_lesion_hu,
                          noise_augment_probability=cfg.noise_augment_probability)
        writer = None
        if cfg.tensorboard and self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.out / "tensorboard"))
        status_path = self.out / "status.json"
        stopped = False
        def done() -> bool:
            return cfg.max_steps is not None and self.global_step >= cfg.max_steps

        try:
            while self.epoch < cfg.epochs and not done():
                ds.epoch_seed = cfg.seed * 7919 + self.epoch
                loader = self._loader(ds)
                torch.manual_seed(cfg.seed * 15485863 + self.epoch)
                sums = {"loss_g": 0.0, "loss_d": 0.0, "loss_l1": 0.0, "loss_contrast": 0.0}
                n = 0
                it = loader
                if cfg.progress and self.rank == 0:
                    from tqdm.auto import tqdm

                    it = tqdm(loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True)
                per_epoch = min(len(loader), cfg.max_steps_per_epoch or len(loader))
                for step, batch in enumerate(it):
                    if self.stop_event.is_set():
                        raise StopTraining()
                    if (cfg.max_steps_per_epoch and step >= cfg.max_steps_per_epoch) or done():
                        break
                    self._set_lr(per_epoch)
                    losses = self._step(batch)
                    for k in sums:
                        sums[k] += losses[k]
                    n += 1
                    self.global_step += 1
                    self._log_step(losses)
                    if self.rank == 0:
                        self._progress(status_path, step + 1, per_epoch)
                    if cfg.progress and self.rank == 0:
                        it.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                self.epoch += 1
                record = {"epoch": self.epoch, "step": self.global_step, **{k: v / max(n, 1) for k, v in sums.items()}}
                if self.rank != 0:  # rank 0 alone validates and writes; the others go on with the next epoch
                    self.history.append(record)
                    continue
                if val_loaded and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
                    vm, chosen = self._validate_and_choose(val_loaded)
                    record["val"] = vm
                    record["weights"] = chosen
                    score = self._score(vm)
                    if score > self.best:
                        self.best = score
                        record["best"] = True
                        self.calibration = self._val_calibration
                self.history.append(record)
                state = self.state()
                ckpt_io.atomic_save(state, last)
                if record.get("best") or not val_loaded:
                    weights = record.get("weights", "average" if self.G_ema is not None else "raw")
                    use = self.G if weights == "raw" else self.G_eval
                    ckpt_io.export_inference({**state, "generator": use.state_dict()}, self.out / "model.pt",
                                             model_card={**self.model_card(train), "weights": weights})
                if writer:
                    for k, v in record.items():
                        if isinstance(v, float):
                            writer.add_scalar(f"train/{k}", v, self.epoch)
                    for k, v in record.get("val", {}).items():
                        writer.add_scalar(f"val/{k}", v, self.epoch)
                    writer.flush()
                ckpt_io.write_json_atomic({"state": "running", "epochs": cfg.epochs, **record, "history": self.history,
                                           "steps": self.step_log}, status_path)
                log.info("epoch %d: %s", self.epoch, json.dumps(record, default=float))
                if self.on_epoch:
                    self.on_epoch(record)
        except StopTraining:
            stopped = True
            log.warning("training stopped at epoch %d (step %d); last completed epoch kept", self.epoch, self.global_step)
        finally:
            if writer:
                writer.close()
        summary = {
            "state": "stopped" if stopped else "finished",
            "epoch": self.epoch,
            "epochs": cfg.epochs,
            "global_step": self.global_step,
            "best_psnr_brain": next((r["val"]["psnr_brain"] for r in reversed(self.history) if r.get("best")), None),
            "best_score": self.best if math.isfinite(self.best) else None,
            "history": self.history,
            "steps": self.step_log,
            "model": str(self.out / "model.pt") if (self.out / "model.pt").exists() else None,
        }
        if self.rank == 0:
            ckpt_io.write_json_atomic({k: v for k, v in summary.items() if k != "model"}, status_path)
        return summary

    def _keep_prior(self, ck: dict) -> None:
        """A resumed or fine-tuned generator predicts a residual over the table it was trained with: keep that
        table (refitting could give another one: other cases, or a lift setting changed since)."""
        if self.gcfg.residual_prior and (ck.get("preprocess") or {}).get("tissue_prior"):
            self.pre.tissue_prior = ck["preprocess"]["tissue_prior"]

    def prepare(self, train_loaded) -> None:
        """Records the slice thickness the model learns from (``slab_mm``: the training cases' median slice
        spacing, unless the preprocessing set it), and fits the tissue prior on the training cases when the
        generator predicts a residual over it (once: a resumed or fine-tuned run keeps its checkpoint's table)."""
        if self.pre.slab_mm is None and train_loaded:
            median = float(np.median([float(c.spacing_zyx[0]) for c in train_loaded]))
            self.pre.slab_mm = round(min(max(median, SLAB_MM_RANGE[0]), SLAB_MM_RANGE[1]), 3)
        if self.gcfg.residual_prior and self.pre.tissue_prior is None:
            from .prior import TissuePrior

            lift = self.cfg.prior_mirror_lift_hu if self.pre.mirror_channels else 0.0
            self.pre.tissue_prior = TissuePrior(mirror_lift_hu=lift).fit(train_loaded).to_dict()

    def _loader(self, ds) -> DataLoader:
        """This epoch's batches: every slice once, lesion slices ``lesion_oversample`` times, shuffled by
        (seed, epoch). A DistributedSampler deals the order out to the ranks (interleaved), so at each step the
        ranks' batches of ``batch_size / world`` together are the single-process batch of ``batch_size``."""
        cfg = self.cfg
        extra = 0 if cfg.patch_size else max(cfg.lesion_oversample, 1) - 1  # patches: lesion_patch_fraction instead
        idx = list(range(len(ds))) + [i for i in ds.lesion_items for _ in range(extra)]
        sampler = DistributedSampler(Subset(ds, idx), num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=cfg.seed * 104729, drop_last=True)
        sampler.set_epoch(self.epoch)
        local = cfg.batch_size // self.world
        return DataLoader(Subset(ds, idx), batch_size=local, sampler=sampler, drop_last=len(idx) > cfg.batch_size)

    STEP_LOG_MAX = 2000

    def _log_step(self, losses: dict) -> None:
        """Logs every step's losses; each time the log passes STEP_LOG_MAX points every second one is dropped, so
        it stays bounded with older stretches thinner than the newest (the curve keeps its shape)."""
        self.step_log.append([self.global_step] + [round(float(losses.get(k, float("nan"))), 5)
                                                   for k in ("loss_g", "loss_d", "loss_l1")])
        if len(self.step_log) > self.STEP_LOG_MAX:
            self.step_log = self.step_log[::2]

    def _progress(self, status_path: Path, step_in_epoch: int, per_epoch: int, every: float = 2.0) -> None:
        """Writes progress and an ETA to status.json at most every ``every`` seconds."""
        now = time.monotonic()
        if self._t_start is None:  # first step of this fit(): the rate counts from here (resumed runs too)
            self._t_start, self._step_start, self._t_last = now, self.global_step - 1, 0.0
        if now - self._t_last < every:
            return
        self._t_last = now
        cfg = self.cfg
        total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
        rate = (now - self._t_start) / max(self.global_step - self._step_start, 1)
        ckpt_io.write_json_atomic({"state": "running", "epoch": self.epoch + 1, "epochs": cfg.epochs, "step_in_epoch": step_in_epoch,
                      "steps_per_epoch": per_epoch, "global_step": self.global_step, "total_steps": total,
                      "seconds_per_step": round(rate, 3), "eta_seconds": round(max(total - self.global_step, 0) * rate, 1),
                      "history": self.history, "steps": self.step_log}, status_path)

    def _set_lr(self, per_epoch: int) -> None:
        """Both optimisers' learning rate for the coming step (``TrainConfig.lr_schedule``)."""
        cfg = self.cfg
        total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * per_epoch
        f = cfg.lr_factor(self.global_step, total)
        for opt, base in ((self.opt_g, cfg.lr_g), (self.opt_d, cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * f

    def _step(self, batch) -> dict:
        cfg = self.cfg
        x = batch["input"].to(self.device)
        y = batch["target"].to(self.device)
        brain = batch["brain"].to(self.device)
        lesion = batch["lesion"].to(self.device)
        # lesions the CT does not show (TrainConfig.unseen_lesion_hu): out of every loss but the adversarial one
        keep = 1.0 - batch["ignore"].to(self.device) if "ignore" in batch else None
        brain_kept = brain if keep is None else brain * keep
        ac = torch.autocast("cuda", dtype=torch.float16) if self.amp else torch.autocast("cpu", enabled=False)
        with ac:
            fake, lesion_logits = self.G_train(x, return_aux=True)
            if self.pre.mask_output:
                fake_d = fake * brain
                y_d = y * brain
            else:
                fake_d, y_d = fake, y
            # discriminator: real and fake pairs in one forward (one DDP call per backward; per-sample norms)
            logits = self.D_train(torch.cat([x, x]), torch.cat([y_d, fake_d.detach()]))
            real_logits, fake_logits = logits.chunk(2)
            loss_d = 0.5 * (_gan_loss(real_logits, True, cfg.gan_mode) + _gan_loss(fake_logits, False, cfg.gan_mode))
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        with ac:
            # the plain D: its gradients here are discarded (zeroed before the next D step), those of G are synced
            adv = _gan_loss(self.D(x, fake_d), True, cfg.gan_mode)
            l1 = weighted_l1(fake.float(), y, brain, lesion, cfg.lesion_weight, cfg.background_weight, keep)
            loss_g = cfg.lambda_adv * adv + cfg.lambda_l1 * l1
            contrast = lesion_contrast_loss(fake.float(), y, brain_kept, lesion)
            if cfg.lambda_contrast:
                loss_g = loss_g + cfg.lambda_contrast * contrast
            if lesion_logits is not None and cfg.lambda_aux:
                if self.gcfg.residual_prior:  # the lesion-probability head: BCE (calibratable) + soft Dice
                    aux = F.binary_cross_entropy_with_logits(lesion_logits.float(), lesion, weight=brain_kept)
                    if cfg.lambda_dice:
                        aux = aux + cfg.lambda_dice * soft_dice_loss(torch.sigmoid(lesion_logits.float()) * brain_kept,
                                                                     lesion)
                else:  # the earlier auxiliary head (weighted BCE)
                    pos = torch.tensor(10.0, device=lesion_logits.device)
                    aux = F.binary_cross_entropy_with_logits(lesion_logits.float(), lesion, weight=brain, pos_weight=pos)
                loss_g = loss_g + cfg.lambda_aux * aux
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        self._update_ema()
        vals = global_mean([float(loss_g.detach()), float(loss_d.detach()), float(l1.detach()), float(contrast.detach())],
                           self.device)
        return dict(zip(("loss_g", "loss_d", "loss_l1", "loss_contrast"), vals))

    def model_card(self, train: list[Case]) -> dict:
        return {
            "name": "JMMDA-GAN CT-to-DWI",
            "output": "SYNTHETIC DWI - not for diagnosis",
            "training_cases": [c.id for c in train],
            "phantom_trained": all(c.id.startswith("phantom") for c in train),
            "intended_use": "research; synthetic images must not be used for diagnosis",
        }
