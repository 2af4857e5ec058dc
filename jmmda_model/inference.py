"""Volume inference: CT (+ optional brain mask) -> synthetic DWI on the CT's exact geometry."""
from __future__ import annotations

import contextlib
import math
import threading
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .checkpoint import CheckpointError
from .clinical.brainmask import check_head_ct, ct_brain_mask
from .clinical.geometry import (
    OBLIQUE_TOLERANCE_DEG,
    copy_geometry,
    from_axial,
    inplane_obliquity_deg,
    resample_inplane,
    resample_straight,
    resample_slabwise,
    reslice_axial,
    slice_tilt_deg,
    to_axial,
)
from .clinical.imageio import PROBABILITY_NOTE, check_ct, check_mask, label_synthetic
from .clinical.midplane import canonical_pose, estimate_midplane, mirror_or_self, patient_lr
from .data import mirror_noise_scale, model_input, reslices, slab_mask
from .export import is_torchscript, load_generator, load_torchscript
from .metrics import OPERATING_MAX_FP, calibrated_probability
from .networks import has_lesion_head
from .preprocess import (
    PreprocessConfig,
    from_slabs,
    grid_anchor,
    pad_to_multiple,
    slab_plan,
    to_slabs,
)


#: the default of ``Synthesizer(flip_average=...)``: every slice synthesised as the mean of the network's answers to
#: it and to its left-right mirror image (all channels flipped in the canonical pose, as the training's flip
#: augmentation does; the answer flipped back). The network is not mirror-symmetric (the two views agree at r 0.93 on
#: test phantoms), so the mean is closer to the true DWI: in-brain PSNR +0.22 dB [+0.20, +0.24] on 120 test phantoms,
#: false-bright brain a tie, lesions a tie leaning worse (53 instead of 54 of 65 shown), at twice the network time
#: (record ``flip_average_2026-12-06``). Off by default (lesions first; the time); ``jmmda infer --flip-average``.
FLIP_AVERAGE = False
VIEWS_NOTE = ("the mean of the network's answers to the CT and to its left-right mirror image (flipped back), "
              "slice by slice")

#: slab layouts a thin series is synthesised in (``preprocess.slab_plan``), 1 / SLAB_PHASES of a slab apart: the
#: mean of their syntheses hardly depends on where the slabs fall in the head (a head moved 1-4 mm between two
#: scans: r 0.989-0.996, one layout 0.93-0.98; record slab_plan_2026-12-06), at this many times the network time
SLAB_PHASES = 2


class DeviceError(RuntimeError):
    """The configured compute device cannot be used."""


def pick_device(device: str | None = None) -> torch.device:
    """``auto``/None: the GPU when one is usable, else the CPU; otherwise the named device, checked."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"invalid device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but no CUDA GPU is usable here; use 'auto' or 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


@torch.no_grad()
def predict_slices(net, x: np.ndarray, device, batch_size: int = 8, amp: bool = False, with_logits: bool = False,
                   flip_average: bool = False):
    """(N, C, H, W) model input -> (N, H, W) synthetic DWI in [0, 1]; pads to the net's divisor.
    ``with_logits``: returns (DWI, lesion logits (N, H, W) or None when the net has no lesion head).
    ``flip_average``: the mean of the net's answers to the input and to its left-right mirror image (every channel
    flipped, as the training's flip augmentation does; the answer flipped back), synthesis and logits alike."""
    out = np.empty((x.shape[0],) + x.shape[2:], np.float32)
    want = with_logits and has_lesion_head(net)
    logits = np.empty_like(out) if want else None
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    was_training = net.training
    net.eval()
    try:
        for s in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch_size])).to(device)
            xb, (t, h, l, w) = pad_to_multiple(xb, net.size_divisor)
            m = xb.shape[0]
            if flip_average:  # both views in one batch
                xb = torch.cat([xb, xb.flip(-1)])
            with autocast:
                yb, lb = net(xb, return_aux=True) if want else (net(xb), None)
            if flip_average:  # each view's answer, the mirrored one flipped back
                yb = (yb[:m] + yb[m:].flip(-1)) / 2
                lb = None if lb is None else (lb[:m] + lb[m:].flip(-1)) / 2
            if lb is not None:
                logits[s : s + batch_size] = lb[:, 0, t : t + h, l : l + w].float().cpu().numpy()
            out[s : s + batch_size] = yb[:, 0, t : t + h, l : l + w].float().cpu().numpy()
    finally:
        net.train(was_training)
    return (out, logits) if with_logits else out


def _release_freed_memory() -> None:
    """Returns memory the allocator keeps after large temporary arrays to the system (glibc ``malloc_trim``): for a
    thin-slice series the work stage's freed buffers would otherwise stay resident under the full-resolution
    output. A no-op where there is no glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def fill_outside(y: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(z, y, x) ``y`` with every pixel outside ``brain`` set to the value of its nearest brain pixel in its slice
    (slices without brain unchanged), in place."""
    from scipy import ndimage as ndi

    for k in np.flatnonzero(brain.reshape(brain.shape[0], -1).any(1)):
        out = brain[k] == 0
        if out.any():
            iy, ix = ndi.distance_transform_edt(out, return_distances=False, return_indices=True)
            y[k] = y[k][iy, ix]
    return y


def fill_slabs_without_brain(a: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """(z, y, x) ``a`` with every slice without brain set to the nearest slice with brain, in place: a result
    computed on slabs is interpolated back onto thin slices whose brain may reach past the last slab with brain."""
    has = np.flatnonzero(brain.reshape(brain.shape[0], -1).any(1))
    if has.size:
        for j in np.setdiff1d(np.arange(brain.shape[0]), has):
            a[j] = a[has[np.argmin(np.abs(has - j))]]
    return a


def read_calibration(cal, name: str) -> tuple[float, float | None]:
    """(temperature, operating threshold or None) of a model's ``lesion_calibration``; ``CheckpointError`` naming
    ``name`` for a value that is not a positive finite temperature or a threshold in [0, 1] (a model whose
    probability would be silently wrong is refused when loaded)."""
    cal = cal if cal is not None else {}
    if not isinstance(cal, dict):
        raise CheckpointError(f"{name}: its lesion calibration is not a mapping")
    try:
        t = float(cal.get("temperature", 1.0))
        op = cal.get("operating_point")
        thr = None if op is None else float(op["threshold"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{name}: unusable lesion calibration ({type(exc).__name__}: {exc})") from exc
    if not (math.isfinite(t) and t > 0):
        raise CheckpointError(f"{name}: unusable lesion calibration (temperature {t!r})")
    if thr is not None and not (math.isfinite(thr) and 0.0 <= thr <= 1.0):
        raise CheckpointError(f"{name}: unusable lesion calibration (operating threshold {thr!r})")
    return t, thr


class Synthesizer:
    """Loads a trained generator once; thread-safe ``__call__`` per volume."""

    def __init__(self, checkpoint: str | Path | None, device: str | None = None, batch_size: int = 8, amp: bool = True,
                 network: torch.nn.Module | None = None, meta: dict | None = None, flip_average: bool = FLIP_AVERAGE):
        """``checkpoint``: a JMMDA-GAN checkpoint or TorchScript export; or ``network`` (weights loaded) with
        ``meta`` holding at least its ``preprocess`` settings (the MONAI Bundle path). ``flip_average``: every slice
        is synthesised as the mean of the network's answers to it and to its left-right mirror image (see
        ``FLIP_AVERAGE``, off by default: one view)."""
        self.path = Path(checkpoint) if checkpoint is not None else None
        self.device = pick_device(device)
        self.model_format = "checkpoint"
        if network is not None:
            self.net, self.ckpt_meta = network, dict(meta or {})
        elif is_torchscript(self.path):  # an exported file (jmmda export-torchscript)
            self.net, self.ckpt_meta = load_torchscript(self.path, self.device)
            self.model_format = "torchscript"
        else:
            self.net, ck = load_generator(self.path)
            self.ckpt_meta = {k: v for k, v in ck.items() if k not in ("generator", "discriminator", "opt_g", "opt_d")}
        try:  # refused when loaded, not at the first CT: a malformed setting or tissue prior
            self.pre = PreprocessConfig.from_dict(self.ckpt_meta["preprocess"])
        except (KeyError, TypeError, ValueError) as exc:
            name = self.path.name if self.path is not None else "the model"
            raise CheckpointError(f"{name}: unusable preprocessing settings ({type(exc).__name__}: {exc})") from exc
        self._temperature, self._operating = read_calibration(self.ckpt_meta.get("lesion_calibration"),
                                                              self.path.name if self.path is not None else "the model")
        self.net.to(self.device).eval()
        self.batch_size = batch_size
        # mixed precision for the Python model on a GPU; an export runs in float32, as traced and checked
        self.amp = amp and self.device.type == "cuda" and self.model_format == "checkpoint"
        self._lock = threading.Lock()
        self.flip_average = bool(flip_average)

    @property
    def model_card(self) -> dict:
        return dict(self.ckpt_meta.get("model_card", {}))

    def predict_slices(self, x: np.ndarray, with_logits: bool = False):
        with self._lock:
            return predict_slices(self.net, x, self.device, self.batch_size, self.amp, with_logits=with_logits,
                                  flip_average=self.flip_average)

    @property
    def has_probability(self) -> bool:
        """Whether this model gives an infarct-probability map (a lesion head, run as a Python module)."""
        return has_lesion_head(self.net)

    @property
    def temperature(self) -> float:
        return self._temperature

    @property
    def operating_threshold(self) -> float | None:
        """The probability threshold chosen on the validation cases (``metrics.operating_threshold``: the lowest
        that keeps to 2 false-positive clusters per case), where a viewer's suspected-infarct outline starts; None
        for a model calibrated before it was kept."""
        return self._operating

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated infarct probability from lesion logits (temperature from the validation cases)."""
        return calibrated_probability(logits, self.temperature)

    #: slices whose model input exists at once (thin-slice series: the (z, C, y, x) input of 320 slices is 0.3 GB)
    SLAB = 32
    #: lesion logit of slices without brain (not run through the network): probability 0
    NO_BRAIN_LOGIT = -30.0

    def predict_streamed(self, ct_hu: np.ndarray, brain: np.ndarray, spacing_zyx, mirror: np.ndarray | None = None,
                         mirror_scale: float | None = None):
        """``predict_slices(model_input(...))`` slab by slab: each slab's input is built with its context slices
        (and the tissue prior and the hemispheric difference's noise scale computed once for the whole volume; the
        scale is ``mirror_scale`` when given), so the result is the same as building the whole input, at a fraction
        of the memory. Returns (dwi, logits or None)."""
        from .prior import TissuePrior

        n, k = ct_hu.shape[0], int(self.pre.context_slices)
        if mirror_scale is None:
            mirror_scale = mirror_noise_scale(ct_hu, mirror, brain, self.pre)
        prior = (TissuePrior.from_dict(self.pre.tissue_prior).predict(ct_hu, brain, spacing_zyx, mirror)
                 if self.pre.tissue_prior is not None else None)
        # the output is defined inside the brain only: slices without brain (above the vertex, below the skull base
        # - a tenth of a thin-slice series) are 0 without running the network
        run = brain.reshape(n, -1).any(1) if self.pre.mask_output else np.ones(n, bool)
        y = np.zeros(ct_hu.shape, np.float32)
        logits = np.full(ct_hu.shape, self.NO_BRAIN_LOGIT, np.float32) if self.has_probability else None
        for s in range(0, n, self.SLAB):
            e = min(n, s + self.SLAB)
            todo = np.flatnonzero(run[s:e])
            if todo.size == 0:
                continue
            a, b = max(0, s - k), min(n, e + k)
            x = model_input(ct_hu[a:b], brain[a:b], self.pre, spacing_zyx, None if mirror is None else mirror[a:b],
                            prior=None if prior is None else prior[a:b], mirror_scale=mirror_scale)
            yb, lb = self.predict_slices(x[s - a : e - a][todo], with_logits=True)
            y[s + todo] = yb
            if logits is not None and lb is not None:
                logits[s + todo] = lb
        return y, logits

    def predict_volume(self, ct_hu: np.ndarray, brain: np.ndarray, spacing_zyx, plane=None, mirror=None,
                       with_logits: bool = True):
        """Synthetic DWI and lesion logits (or None) of an axial volume on the model's grid, computed in the
        canonical pose (``clinical.midplane.canonical_pose``: the slices turned so the mid-sagittal line is vertical
        and centred on a fixed canvas) and mapped back: the same head gives the same answer wherever and however
        (in plane) it lies in the image. Returns (dwi, logits, pose info): logits None without a lesion head, or
        when ``with_logits`` is False (then they are not mapped back). For a model whose output is defined inside
        the brain (``mask_output``) the DWI outside the brain holds the nearest brain value: mask it."""
        if plane is None:
            plane = estimate_midplane(ct_hu, spacing_zyx)
        if mirror is None and self.pre.mirror_channels:
            mirror = mirror_or_self(ct_hu, plane, spacing_zyx)
        pose = canonical_pose(brain, spacing_zyx, plane, divisor=int(getattr(self.net, "size_divisor", 8)),
                              rotate=bool(self.pre.canonical_rotation))
        c_ct = pose.forward(ct_hu, order=1, cval=-1000.0)
        c_brain = (pose.forward(brain, order=0) > 0.5).astype(np.uint8)
        c_mirror = pose.forward(mirror, order=1, cval=-1000.0) if mirror is not None else None
        # the noise of the hemispheric difference, measured before the pose's interpolation smooths it (as in training)
        scale = mirror_noise_scale(ct_hu, mirror, brain, self.pre)
        y, logits = self.predict_streamed(c_ct, c_brain, spacing_zyx, c_mirror, mirror_scale=scale)
        if self.pre.mask_output:
            # the synthesis is defined inside the brain: carried outwards before it is interpolated back (here and
            # onto the CT grid), so the brain's rim is not darkened by the zeros around it; callers mask it again
            y = fill_outside(y, c_brain)
        y = pose.inverse(y)
        if logits is not None and with_logits:  # mapped back only when wanted
            # the probability is read inside the brain only: carried outwards as the synthesis is, so the rim is not
            # mixed with whatever the network gives outside the brain (the caller masks it on the CT grid)
            logits = pose.inverse(fill_outside(logits, c_brain))
        else:
            logits = None
        return y, logits, pose.to_dict()

    def __call__(self, ct: sitk.Image, mask: sitk.Image | None = None, return_probability: bool = False):
        """Returns (synthetic DWI float32 on ct's geometry, brain mask used, info); with ``return_probability``
        also the calibrated infarct-probability map on ct's geometry (None when the model has no lesion head)."""
        check_ct(ct)
        info = {"mask_source": "supplied"}
        if ct.HasMetaDataKey("jmmda_dicom_notes"):  # what the series reader did (tilt corrected, localizer left out)
            info["series_notes"] = ct.GetMetaData("jmmda_dicom_notes").split("; ")
        if mask is None:
            mask = ct_brain_mask(ct)
            info["mask_source"] = "automatic (CT)"
        brain_native = check_mask(mask, ct)
        info["head_check"] = check_head_ct(ct, brain_native)  # refuses a CT that is not of a head
        brain_ml = round(float(brain_native.sum()) * float(np.prod(ct.GetSpacing())) / 1000.0, 1)
        m = copy_geometry(brain_native.astype(np.uint8, copy=False), ct)
        del brain_native  # full-resolution arrays are dropped as soon as they are used (thin-slice series)
        ct_ax, mask_ax = to_axial(ct), to_axial(m)
        # rows turned in the slice plane (an oblique series): straightened first, unless the model turns its input
        # into the canonical pose itself (one interpolation, not two)
        turned = inplane_obliquity_deg(ct_ax)
        tilt = slice_tilt_deg(ct_ax)
        # thin slices angled to the axial plane (gantry tilt): re-sliced onto axial planes, where the slabs lie as an
        # untilted series' would (thick ones are kept: re-slicing them blurs; resample_straight)
        reslice = reslices(ct_ax, self.pre.slab_mm)
        straighten = turned > OBLIQUE_TOLERANCE_DEG and not self.pre.canonical_rotation and not reslice
        inplane = self.pre.needs_resampling(ct_ax)
        resampled = inplane or straighten or reslice
        if reslice:
            info["slice_tilt"] = (f"the slices are angled {tilt:.1f} degrees to the patient's axial plane (gantry tilt or "
                                  f"oblique series): thin slices, re-sliced onto axial planes {ct_ax.GetSpacing()[2]:.2f} "
                                  "mm apart for the synthesis, which was resampled back onto the CT's slices")
        elif tilt > OBLIQUE_TOLERANCE_DEG:
            info["slice_tilt"] = (f"the slices are angled {tilt:.1f} degrees to the patient's axial plane (gantry tilt or "
                                  "oblique series): the synthesis is computed on the CT's own slices, not re-sliced")
        if straighten:
            work_ct = resample_straight(ct_ax, self.pre.inplane_spacing)
            brain = (sitk.GetArrayFromImage(resample_straight(mask_ax, self.pre.inplane_spacing, label=True))
                     > 0.5).astype(np.uint8)
            info["straightened"] = (f"the image rows are turned {turned:.1f} degrees in the slice plane: the synthesis "
                                    "was computed on straightened slices and resampled onto the CT grid")
        elif resampled:  # the network works at its training pixel size (and on axial planes when re-sliced)
            work_ct, work_m = ct_ax, mask_ax
            if inplane:
                work_ct = resample_inplane(ct_ax, self.pre.inplane_spacing)
                work_m = resample_inplane(mask_ax, self.pre.inplane_spacing, label=True)
            if reslice:
                work_ct, work_m = reslice_axial(work_ct), reslice_axial(work_m, label=True)
            brain = (sitk.GetArrayFromImage(work_m) > 0.5).astype(np.uint8)
            del work_m
        else:
            work_ct = ct_ax
            brain = (sitk.GetArrayFromImage(mask_ax) > 0.5).astype(np.uint8)
        work_geo = (work_ct.GetOrigin(), work_ct.GetSpacing(), work_ct.GetDirection())
        anchor = grid_anchor(work_ct)
        ct_hu = sitk.GetArrayFromImage(work_ct).astype(np.float32)
        del ct_ax, work_ct
        spacing = tuple(reversed(work_geo[1]))
        n_slices, slice_mm = ct_hu.shape[0], spacing[0]
        plan = slab_plan(n_slices, slice_mm, self.pre.slab_mm, anchor)
        # thinner slices than the model learnt from: it sees slabs of its own thickness, in SLAB_PHASES layouts a
        # fraction of a slab apart, and the mean of their syntheses is interpolated back onto the slices
        layouts = [None] if plan is None else [
            slab_plan(n_slices, slice_mm, self.pre.slab_mm, anchor + plan.thickness * k / SLAB_PHASES)
            for k in range(SLAB_PHASES)]
        if plan is not None:
            what = f"the {n_slices} axial planes" if reslice else f"the CT's {n_slices} slices"
            how = ("the synthesis was computed on the slabs" if SLAB_PHASES == 1 else
                   f"in {SLAB_PHASES} layouts {float(self.pre.slab_mm) / SLAB_PHASES:.2f} mm apart; the mean of their "
                   "syntheses was")
            info["slabs"] = (f"{what} of {slice_mm:.2f} mm were averaged into {len(plan)} slabs "
                             f"of {float(self.pre.slab_mm):.2f} mm placed in the patient's frame (the model was "
                             f"trained on {self.pre.slab_mm:g} mm slices), {how} interpolated back onto the CT's "
                             "slices: its resolution across slices is the slabs'")
        # the plane's angle is counted from the patient's sagittal plane (an oblique series' rows may be turned in the
        # slice plane: the model turns the head itself)
        lr = patient_lr(work_geo[2])
        y = logits = None
        for i, lay in enumerate(layouts):
            ct_l, brain_l = (ct_hu, brain) if lay is None else (to_slabs(ct_hu, lay), slab_mask(brain, lay))
            spacing_l = spacing if lay is None else (float(self.pre.slab_mm), *spacing[1:])
            plane = estimate_midplane(ct_l, spacing_l, patient_lr_xyz=lr)  # reported, never used untrusted
            if i == 0:
                info["midplane"] = plane.to_dict()
                if self.pre.mirror_channels:  # hemispheric comparison
                    info["hemispheric_comparison"] = ("used" if plane.trusted else
                                                      f"NOT used (mid-sagittal plane not trusted: {plane.reason})")
            elif plane.trusted != info["midplane"]["trusted"]:
                # the layouts would disagree on the hemispheric comparison: the first layout alone
                info["slabs"] += (" (here the first layout alone: the mid-sagittal plane was trusted in one layout "
                                  "and not in the other)")
                break
            y_l, lg_l, pose = self.predict_volume(ct_l, brain_l, spacing_l, plane, with_logits=return_probability)
            if i == 0:
                info["canonical_pose"] = pose
            if lay is not None:  # slabs without brain (a thin slice of brain at the vertex) take the nearest brain slab's
                y_l = from_slabs(fill_slabs_without_brain(y_l, brain_l), lay)
                lg_l = from_slabs(fill_slabs_without_brain(lg_l, brain_l), lay) if lg_l is not None else None
            parts = i + 1
            y = y_l if y is None else y + y_l
            logits = lg_l if logits is None or lg_l is None else logits + lg_l
        y = y / parts if parts > 1 else y
        logits = logits / parts if logits is not None and parts > 1 else logits
        prob = None
        if logits is not None and return_probability:
            # not masked here: masked on the CT grid (masking first would mix zeros into the rim when resampled)
            prob = np.clip(self.probability(logits), 0.0, 1.0)
        del ct_hu

        _release_freed_memory()  # the full-resolution output comes next: hand the work stage's freed heap back first

        def to_ct(a: np.ndarray, masked: bool) -> sitk.Image:
            """Work-grid array -> float32 image on the CT's own grid (0 outside the brain mask when ``masked``). A
            resampled result is written slab by slab straight onto the CT's grid in its own orientation (no
            re-orientation copy, no second full-size image for the mask): the full-resolution result exists once."""
            img = sitk.GetImageFromArray(a.astype(np.float32, copy=False))
            if not resampled:
                img.CopyInformation(mask_ax)
                if masked:
                    img = sitk.Mask(img, mask_ax, 0.0, 0)
                return from_axial(img, ct)
            img.SetOrigin(work_geo[0])
            img.SetSpacing(work_geo[1])
            img.SetDirection(work_geo[2])
            return resample_slabwise(img, ct, mask=m if masked else None)

        out = label_synthetic(to_ct(y, self.pre.mask_output))
        del y
        prob_img = None
        if prob is not None:
            prob_img = label_synthetic(to_ct(prob, True), PROBABILITY_NOTE)  # 0 outside the brain
            info["probability"] = {"temperature": self.temperature,
                                   "operating_threshold": self.operating_threshold,
                                   "note": "calibrated on phantom validation cases only; a low probability never "
                                           "rules out an infarct"}
            if self.operating_threshold is not None:
                info["probability"]["operating_note"] = (
                    f"operating_threshold: the lowest probability threshold that kept to {OPERATING_MAX_FP:g} "
                    "false-positive clusters (>= 0.5 mL) per case on the model's phantom validation cases; lesions "
                    "below it are not outlined")
        elif return_probability:
            info["probability"] = None
            info["probability_note"] = ("this model has no lesion-probability head (or is a TorchScript export "
                                        "written without its lesion logits, before release 0.2.1)")
        info.update(
            {
                "synthetic": True,
                "note": "SYNTHETIC DWI - not for diagnosis",
                "intensity": "normalised DWI units, 0..1 (in-brain percentile scale of the training data)",
                "device": str(self.device),
                "model_format": self.model_format,
                "mixed_precision": self.amp,
                "views": VIEWS_NOTE if self.flip_average else "one view (flip averaging off)",
                "resampled_inplane_mm": list(self.pre.inplane_spacing) if resampled else None,
                "brain_ml": brain_ml,
            }
        )
        return (out, m, info, prob_img) if return_probability else (out, m, info)
