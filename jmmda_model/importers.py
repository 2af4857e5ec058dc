"""Import public stroke data sets into the MONAI Label datastore layout used for training.

Datastore (= MONAI Label local datastore): ``<studies>/<id>.nii.gz`` is the CT and
``<studies>/labels/<tag>/<id>.nii.gz`` the paired volumes: ``dwi``, ``brainmask``, ``lesion``
(and ``adc`` where the source has one). Every label is put on the CT grid; the brain mask is
computed from the CT (SimpleITK) when the source has none.

Layouts:
* APIS (paired CT-MRI ischaemic stroke): files ``<split>_<NNN>_ncct.nii.gz`` and
  ``<split>_<NNN>_adc.nii.gz`` (optionally ``_dwi``) anywhere under the root, lesion masks in a
  ``masks/`` folder named ``<split>_<NNN>[_mask|_msk|_lesion].nii.gz``. APIS ships ADC, not DWI:
  such cases are imported with an ``adc`` label and reported as lacking DWI (not trainable).
* ISLES'24 (BIDS): ``**/sub-<X>/ses-01/**/sub-<X>_ses-01_ncct.nii.gz`` and in ``derivatives/``
  ``sub-<X>_ses-02_space-ncct_dwi.nii.gz``, ``_adc``, ``_lesion-msk`` (already in CT space).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from .brainmask import ct_brain_mask
from .imageio import InputError, check_ct, read_image, same_geometry, write_image
from .registration import register_rigid, resample_to

NII = r"\.nii(?:\.gz)?$"


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    without_dwi: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        s = f"imported {len(self.imported)} case(s)"
        if self.without_dwi:
            s += f"; {len(self.without_dwi)} without DWI (not trainable): {', '.join(self.without_dwi)}"
        if self.registered:
            s += f"; rigidly registered: {', '.join(self.registered)}"
        if self.failed:
            s += "; failed: " + "; ".join(f"{k}: {v}" for k, v in self.failed.items())
        return s


def _files(root: Path) -> list[Path]:
    """Every file under root, sorted; the tree is walked once per discovery."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def _find(files: list[Path], pattern: str) -> dict[str, Path]:
    """{id: path} for the files whose name matches ``pattern`` (with an ``id`` group)."""
    rx = re.compile(pattern)
    return {m.group("id"): p for p in files for m in [rx.search(p.name)] if m}


def discover_apis(root: str | Path) -> dict[str, dict[str, Path]]:
    files = _files(Path(root))
    ncct = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_ncct{NII}")
    adc = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_adc{NII}")
    dwi = _find(files, rf"^(?P<id>[A-Za-z]+_\d+)_dwi{NII}")
    masks = _find([p for p in files if "masks" in p.parts], rf"^(?P<id>[A-Za-z]+_\d+)(?:_(?:mask|msk|lesion|label))?{NII}")
    return {cid: {"ct": ct, "adc": adc.get(cid), "dwi": dwi.get(cid), "lesion": masks.get(cid)} for cid, ct in ncct.items()}


def discover_isles24(root: str | Path) -> dict[str, dict[str, Path]]:
    files = _files(Path(root))
    ncct = _find(files, rf"^(?P<id>sub-[A-Za-z0-9]+)_ses-01_ncct{NII}")
    deriv = [p for p in files if "derivatives" in p.parts]
    dwi, adc, les = (_find(deriv, rf"^(?P<id>sub-[A-Za-z0-9]+)_ses-02_space-ncct_{suffix}{NII}") for suffix in ("dwi", "adc", "lesion-msk"))
    return {cid: {"ct": ct, "dwi": dwi.get(cid), "adc": adc.get(cid), "lesion": les.get(cid)} for cid, ct in ncct.items()}


def _to_ct_grid(ct: sitk.Image, img: sitk.Image, label: bool, register: bool, cid: str, report: ImportReport, tag: str):
    if same_geometry(img, ct):
        out = sitk.Image(img)
        out.CopyInformation(ct)
        return out
    if register and not label:
        t = register_rigid(ct, img)
        report.registered.append(f"{cid}:{tag}")
        return resample_to(ct, img, t, label=False)
    report.resampled.append(f"{cid}:{tag}")
    return resample_to(ct, img, None, label=label)


def import_cases(cases: dict[str, dict[str, Path]], studies: str | Path, prefix: str = "", register: bool = False,
                 overwrite: bool = False) -> ImportReport:
    """Writes the cases into ``studies``. ``register``: rigidly register MR volumes (DWI/ADC) to the
    CT when they are not already on its grid (otherwise they are resampled in physical space)."""
    studies = Path(studies)
    report = ImportReport()
    for cid, files in sorted(cases.items()):
        did = f"{prefix}{cid}"
        dst_ct = studies / f"{did}.nii.gz"
        if dst_ct.exists() and not overwrite:
            report.failed[did] = "already in the datastore (use overwrite)"
            continue
        try:
            ct = read_image(files["ct"], f"{cid} CT")
            check_ct(ct)
            out = {}
            for tag in ("dwi", "adc"):
                if files.get(tag):
                    out[tag] = _to_ct_grid(ct, read_image(files[tag], f"{cid} {tag}"), False, register, did, report, tag)
            if files.get("lesion"):
                les = read_image(files["lesion"], f"{cid} lesion")
                out["lesion"] = sitk.Cast(_to_ct_grid(ct, les, True, False, did, report, "lesion") > 0, sitk.sitkUInt8)
            out["brainmask"] = ct_brain_mask(ct)
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


def import_apis(root, studies, **kw) -> ImportReport:
    cases = discover_apis(root)
    if not cases:
        raise InputError(f"no APIS cases (<split>_<NNN>_ncct.nii.gz) found under {root}")
    return import_cases(cases, studies, prefix="apis_", **kw)


def import_isles24(root, studies, **kw) -> ImportReport:
    cases = discover_isles24(root)
    if not cases:
        raise InputError(f"no ISLES'24 cases (sub-*_ses-01_ncct.nii.gz) found under {root}")
    return import_cases(cases, studies, prefix="isles24_", **kw)
