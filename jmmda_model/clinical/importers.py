"""Import public stroke data sets into the MONAI Label datastore layout used for training.

Datastore (= MONAI Label local datastore): ``<studies>/<id>.nii.gz`` is the CT and
``<studies>/labels/<tag>/<id>.nii.gz`` the paired volumes: ``dwi``, ``brainmask``, ``lesion``
(and ``adc`` where the source has one). Every label is put on the CT grid; the brain mask is
computed from the CT (SimpleITK) when the source has none.

Layouts:
* APIS (paired CT-MRI ischaemic stroke): files ``<split>_<NNN>_ncct.nii.gz`` and
  ``<split>_<NNN>_adc.nii.gz`` (optionally ``_dwi``) anywhere under the root, lesion masks in a
  ``masks/`` folder named ``<split>_<NNN>[_mask|_msk|_lesion|_r1_mask].nii.gz`` (a second rater's
  ``_r2_mask`` becomes the ``lesion_r2`` label). APIS ships ADC, not DWI:
  such cases are imported with an ``adc`` label and reported as lacking DWI (not trainable).
* ISLES'24 (BIDS): ``**/sub-<X>/ses-01/**/sub-<X>_ses-01_ncct.nii.gz`` and in ``derivatives/``
  ``sub-<X>_ses-02_space-ncct_dwi.nii.gz``, ``_adc``, ``_lesion-msk`` (already in CT space).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from .brainmask import ct_brain_mask
from .geometry import resample_to, same_geometry
from .imageio import check_ct, read_image, write_image
from .registration import register_rigid

NII = r"\.nii(?:\.gz)?$"


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    without_dwi: list[str] = field(default_factory=list)
    registered: dict[str, dict] = field(default_factory=dict)  # case -> {"dice": .., "rotation_deg": .., "shift_mm": ..}
    resampled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # source files that make no case, and why
    notes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} case(s)"]
        for cid in self.imported:
            extra = []
            if cid in self.without_dwi:
                extra.append("no DWI (not trainable)")
            if cid in self.registered:
                r = self.registered[cid]
                extra.append(f"registered MR->CT once (brain Dice {r['dice']:.2f}, rotation {r['rotation_deg']:.1f} deg, "
                             f"shift {r['shift_mm']:.1f} mm)")
            if cid in self.notes:
                extra.append(self.notes[cid])
            lines.append(f"  imported {cid}" + (": " + "; ".join(extra) if extra else ""))
        if self.resampled:
            cases = sorted({r.split(":")[0] for r in self.resampled})
            lines.append(f"  WARNING: {len(self.resampled)} MR volume(s) of {len(cases)} case(s) ({', '.join(cases[:5])}"
                         f"{' ...' if len(cases) > 5 else ''}) were resampled onto the CT in scanner coordinates WITHOUT "
                         "registration; CT and MR are separate acquisitions, so lesion masks may be misaligned (lesion "
                         "Dice 0.46 vs truth measured on ISLES'24-like data); re-import with --register")
        lines += [f"  FAILED {k}: {v}" for k, v in self.failed.items()]
        lines += [f"  skipped {k}: {v}" for k, v in self.skipped.items()]
        return "\n".join(lines)


def _files(root: Path) -> list[Path]:
    """Every file under root, sorted; the tree is walked once per discovery."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def _find(files: list[Path], pattern: str) -> dict[str, Path]:
    """{id: path} for the files whose name matches ``pattern`` (with an ``id`` group)."""
    rx = re.compile(pattern)
    return {m.group("id"): p for p in files for m in [rx.search(p.name)] if m}


def discover_apis(root: str | Path, skipped: dict | None = None) -> dict[str, dict[str, Path]]:
    files = _files(Path(root))
    ncct = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_ncct{NII}")
    adc = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_adc{NII}")
    dwi = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_dwi{NII}")
    in_masks = [p for p in files if "masks" in p.parts]
    masks = _find(in_masks, rf"^(?P<id>[A-Za-z]+_\d+)(?:_(?:r1_)?(?:mask|msk|lesion|label))?{NII}")
    masks_r2 = _find(in_masks, rf"^(?P<id>[A-Za-z]+_\d+)_r2_(?:mask|msk|lesion|label){NII}")
    if skipped is not None:
        for kind, found in (("ADC", adc), ("DWI", dwi), ("lesion mask", masks), ("rater-2 mask", masks_r2)):
            for cid, p in found.items():
                if cid not in ncct:
                    skipped[str(p.relative_to(root))] = f"{kind} without a matching {cid}_ncct CT"
    return {cid: {"ct": ct, "adc": adc.get(cid), "dwi": dwi.get(cid), "lesion": masks.get(cid), "lesion_r2": masks_r2.get(cid)}
            for cid, ct in ncct.items()}


def discover_isles24(root: str | Path, skipped: dict | None = None) -> dict[str, dict[str, Path]]:
    files = _files(Path(root))
    ncct = _find(files, rf"^(?P<id>sub-[A-Za-z0-9]+)_ses-01_ncct{NII}")
    deriv = [p for p in files if "derivatives" in p.parts]
    dwi, adc, les = (_find(deriv, rf"^(?P<id>sub-[A-Za-z0-9]+)_ses-02_space-ncct_{suffix}{NII}") for suffix in ("dwi", "adc", "lesion-msk"))
    if skipped is not None:
        subjects = {m.group(1) for p in files for m in [re.search(r"(sub-[A-Za-z0-9]+)", str(p))] if m}
        for sub in sorted(subjects - set(ncct)):
            skipped[sub] = "subject without a ses-01 NCCT"
    return {cid: {"ct": ct, "dwi": dwi.get(cid), "adc": adc.get(cid), "lesion": les.get(cid)} for cid, ct in ncct.items()}


#: a rigid MR->CT registration is refused beyond these (head CT and MR of one patient, same day)
MAX_ROTATION_DEG = 30.0
MAX_SHIFT_MM = 80.0
MIN_BRAIN_DICE = 0.6


def _mr_head(mr: sitk.Image) -> sitk.Image:
    """MR foreground (head) by Otsu threshold, largest component, holes filled."""
    fg = sitk.OtsuThreshold(sitk.Cast(mr, sitk.sitkFloat32), 0, 1)
    cc = sitk.RelabelComponent(sitk.ConnectedComponent(fg), sortByObjectSize=True) == 1
    return sitk.BinaryFillhole(sitk.Cast(cc, sitk.sitkUInt8))


def _register_case(ct: sitk.Image, brain: sitk.Image, mr_ref: sitk.Image) -> tuple[sitk.Transform, dict]:
    """One rigid MR->CT transform per case, with a sanity check; InputError when it fails."""
    import numpy as np

    t = register_rigid(ct, mr_ref, fixed_mask=sitk.BinaryDilate(brain, [3, 3, 1]))
    params = t.GetParameters()
    rot = float(np.degrees(max(abs(v) for v in params[:3])))
    shift = float(np.linalg.norm(params[3:]))
    head = resample_to(ct, _mr_head(mr_ref), t, label=True)
    b = sitk.GetArrayViewFromImage(brain) > 0
    h = sitk.GetArrayViewFromImage(head) > 0
    inside = float((b & h).sum() / max(b.sum(), 1))  # brain covered by the registered MR head
    facts = {"dice": inside, "rotation_deg": rot, "shift_mm": shift}
    if rot > MAX_ROTATION_DEG or shift > MAX_SHIFT_MM or inside < MIN_BRAIN_DICE:
        raise InputError(f"MR->CT registration failed its sanity check (brain covered by the registered MR {inside:.0%} "
                         f"< {MIN_BRAIN_DICE:.0%}, or rotation {rot:.0f} deg / shift {shift:.0f} mm beyond "
                         f"{MAX_ROTATION_DEG:.0f} deg / {MAX_SHIFT_MM:.0f} mm); case refused")
    return t, facts


def import_cases(cases: dict[str, dict[str, Path]], studies: str | Path, prefix: str = "", register: bool = False,
                 overwrite: bool = False, report: ImportReport | None = None) -> ImportReport:
    """Writes the cases into ``studies``.

    MR-space volumes of a case (DWI, ADC, lesion masks) share one MR space: with ``register`` the MR reference
    image (DWI, else ADC) is rigidly registered to the CT *once* and that one transform is applied to every
    MR-space image and label (labels nearest-neighbour); the registration is sanity-checked and the case
    refused when it fails. Without ``register`` they are resampled in physical space. Volumes already on the
    CT grid are copied."""
    studies = Path(studies)
    report = report or ImportReport()
    for cid, files in sorted(cases.items()):
        did = f"{prefix}{cid}"
        dst_ct = studies / f"{did}.nii.gz"
        if dst_ct.exists() and not overwrite:
            report.failed[did] = "already in the datastore (use overwrite)"
            continue
        try:
            ct = read_image(files["ct"], f"{cid} CT")
            check_ct(ct)
            brain = ct_brain_mask(ct)
            mr = {tag: read_image(files[tag], f"{cid} {tag}") for tag in ("dwi", "adc") if files.get(tag)}
            labels = {tag: read_image(files[tag], f"{cid} {tag}") for tag in ("lesion", "lesion_r2") if files.get(tag)}
            ref = mr.get("dwi") or mr.get("adc")
            transform = None
            off_grid = [t for t, img in {**mr, **labels}.items() if not same_geometry(img, ct)]
            if register and off_grid and ref is not None and not same_geometry(ref, ct):
                transform, facts = _register_case(ct, brain, ref)
                report.registered[did] = facts
            out = {}
            for tag, img in {**mr, **labels}.items():
                label = tag.startswith("lesion")
                if same_geometry(img, ct):
                    on = sitk.Image(img)
                    on.CopyInformation(ct)
                else:
                    on = resample_to(ct, img, transform, label=label)
                    if transform is None:
                        report.resampled.append(f"{did}:{tag}")
                out[tag] = sitk.Cast(on > 0, sitk.sitkUInt8) if label else on
            if "lesion_r2" in out:
                report.notes[did] = "lesion = rater 1 mask, lesion_r2 = rater 2 mask"
            out["brainmask"] = brain
        except InputError as exc:
            report.failed[did] = str(exc)
            continue
        write_image(ct, dst_ct)
        for tag, img in out.items():
            write_image(img, studies / "labels" / tag / f"{did}.nii.gz")
        report.imported.append(did)
        if "dwi" not in out:
            report.without_dwi.append(did)
    return report


#: format -> (discovery, datastore id prefix, what its cases look like)
FORMATS = {
    "apis": (discover_apis, "apis_", "APIS cases (<split>_<NNN>_ncct.nii.gz)"),
    "isles24": (discover_isles24, "isles24_", "ISLES'24 cases (sub-*_ses-01_ncct.nii.gz)"),
}


def import_dataset(fmt: str, root, studies, **kw) -> ImportReport:
    """Discovers the cases of data set ``fmt`` under ``root`` and imports them (``import_cases`` options)."""
    discover, prefix, what = FORMATS[fmt]
    report = ImportReport()
    cases = discover(root, report.skipped)
    if not cases:
        raise InputError(f"no {what} found under {root}")
    return import_cases(cases, studies, prefix=prefix, report=report, **kw)


def import_apis(root, studies, **kw) -> ImportReport:
    return import_dataset("apis", root, studies, **kw)


def import_isles24(root, studies, **kw) -> ImportReport:
    return import_dataset("isles24", root, studies, **kw)
