"""MONAI Bundle export of a trained JMMDA-GAN generator (``jmmda export-bundle``).

Bundle layout (MONAI Bundle specification)::

    configs/metadata.json    versions, task, SYNTHETIC output, network_data_format (input/output spec)
    configs/inference.json   network_def (jmmda_model.networks.build_generator), the inferer and the run expression
    models/model.pt          generator weights (state dict)
    models/model.ts          the same generator as TorchScript (jmmda_model.export)
    docs/README.md           SYNTHETIC warning, model card, how to run
    LICENSE

Inference through the bundle (``python -m monai.bundle run --config_file configs/inference.json
--meta_file configs/metadata.json --bundle_root . --image ct.nii.gz --mask mask.nii.gz --output_dir out``) runs
``BundleInferer``: the network built from ``network_def``, weights from ``models/model.pt``, then the same
pipeline as ``jmmda infer`` (geometry checks, head check, axial reorientation, in-plane resampling, 2.5-D slices,
result on the CT's exact grid, NIfTI labelled SYNTHETIC), so both give the same numbers.

``metadata.json`` names MONAI's published metadata schema (URL) as ``schema``; ``verify_metadata`` downloads it
unless ``--filepath`` already holds a schema. Offline, ``METADATA_SCHEMA`` (this package's schema: the fields
the bundle specification requires plus this bundle's SYNTHETIC fields) is that file.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import SYNTHETIC_LABEL, __version__
from .data import strip_image_ext
from .errors import InputError
from .export import export_torchscript, load_generator, sha256
from .networks import GeneratorConfig

MONAI_SCHEMA_URL = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)
METADATA_SCHEMA = Path(__file__).with_name("resources") / "bundle_metadata_schema.json"


def _pkg_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _license_text() -> str:
    root = Path(__file__).resolve().parents[1] / "LICENSE"  # a source checkout / editable install
    if root.is_file():
        return root.read_text()
    try:  # an installed wheel carries it in its dist-info
        dist = importlib.metadata.distribution("jmmda-model")
        lic = next((f for f in dist.files or [] if f.name == "LICENSE"), None)
        if lic is not None:
            return Path(dist.locate_file(lic)).read_text()
    except importlib.metadata.PackageNotFoundError:
        pass
    return "SPDX-License-Identifier: Apache-2.0\n\nEvery image this software produces is SYNTHETIC and not for diagnosis.\n"


def _channel_names(pre: dict) -> dict:
    k = int(pre.get("context_slices", 0))
    names = []
    for d in range(-k, k + 1):
        where = "slice z" if d == 0 else f"slice z{d:+d}"
        for level, width in pre["ct_windows"]:
            names.append(f"CT {where}, window level {level:g} / width {width:g} HU scaled to [0, 1]")
    if pre.get("mirror_channels"):
        for d in range(-k, k + 1):
            where = "slice z" if d == 0 else f"slice z{d:+d}"
            noise = (f" x {pre['mirror_noise_ref_hu']:g} HU / the case's spread of CT minus mirror over parenchyma"
                     if pre.get("mirror_noise_ref_hu") else "")
            names += [f"(CT - CT mirrored across the mid-sagittal plane) {where}, window {level:g}/{width:g} HU, "
                      f"x {pre.get('mirror_gain', 4.0):g}{noise}, clipped to [-1, 1]" for level, width in pre["ct_windows"]]
    names.append("brain mask of slice z (0/1)")
    if pre.get("tissue_prior"):
        names.append("tissue prior of slice z (lookup table: smoothed HU x distance to the brain edge -> DWI)")
    return {str(i): n for i, n in enumerate(names)}


def _tensor(kind: str, fmt: str, shape: list, channels: dict) -> dict:
    """An output tensor of network_data_format: one float32 MR channel in [0, 1], whole slices."""
    return {"type": kind, "format": fmt, "modality": "MR", "num_channels": 1, "spatial_shape": shape, "dtype": "float32",
            "value_range": [0, 1], "is_patch_data": False, "channel_def": channels}


def metadata(ck: dict, size_divisor: int, source: Path) -> dict:
    pre, gcfg = ck["preprocess"], ck["generator_config"]
    card = ck.get("model_card", {})
    shape = [f"{size_divisor}*n", f"{size_divisor}*n"]
    spacing = pre.get("inplane_spacing")
    return {
        "schema": MONAI_SCHEMA_URL,
        "version": "1.0.0",
        "changelog": {"1.0.0": f"exported from {source.name} (sha256 {sha256(source)[:16]}) by jmmda {__version__}"},
        "monai_version": _pkg_version("monai"),
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "jmmda-model": __version__,
            "SimpleITK": _pkg_version("SimpleITK"),
            "PyWavelets": _pkg_version("PyWavelets"),
            "nibabel": _pkg_version("nibabel"),
        },
        "name": "JMMDA-GAN CT-to-DWI (SYNTHETIC)",
        "task": "Synthesis of a SYNTHETIC diffusion-weighted MR image from a head CT and its brain mask",
        "description": (
            "JMMDA-GAN generator (mask-guided fusion, multi-frequency dual-path attention encoder, adaptive fusion "
            f"weighting), axial 2.5-D slices. The output is a {SYNTHETIC_LABEL}: a research image that must never be "
            "read as a real DWI."
        ),
        "authors": "JMMDA-GAN team",
        "copyright": "Copyright 2026 the JMMDA-GAN team",
        "data_source": ", ".join(card.get("training_cases", [])) or "not recorded in the checkpoint",
        "data_type": "nifti",
        "intended_use": card.get("intended_use", "research; synthetic images must not be used for diagnosis"),
        "synthetic_output": True,
        "output_label": SYNTHETIC_LABEL,
        "phantom_trained": bool(card.get("phantom_trained", False)),
        "generator_config": gcfg,
        "preprocess": pre,
        "image_classes": f"{len(_channel_names(pre))} channels: CT windows of adjacent axial slices (and their mirror "
                         "differences), the brain mask (and the tissue prior)",
        "pred_classes": "1 channel: SYNTHETIC DWI, normalised (in-brain median of normal tissue ~0.25), in [0, 1]",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": len(_channel_names(pre)),
                    "spatial_shape": shape,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": _channel_names(pre),
                    "pixel_spacing_mm": list(spacing) if spacing else "as the CT",
                }
            },
            "outputs": {
                "pred": _tensor("image", "magnitude", shape, {"0": SYNTHETIC_LABEL}),
                **({"infarct_probability": {
                    **_tensor("probabilities", "segmentation", shape, {
                        "0": "SYNTHETIC infarct probability (AI; sigmoid(lesion logit / temperature), "
                             "temperature-calibrated on phantoms; a low value never rules out an infarct)"}),
                    "from_network": "the second value of forward(x, return_aux=True): lesion logits",
                }} if GeneratorConfig.from_dict(gcfg).lesion_logits else {}),
            },
        },
    }


def inference_config(gcfg: dict, pre: dict, card: dict, calibration: dict | None = None) -> dict:
    return {
        "imports": ["$import jmmda_model.bundle"],
        "bundle_root": ".",
        "device": "auto",
        "image": "",
        "mask": "",
        "output_dir": "$@bundle_root + '/eval'",
        "network_def": {"_target_": "jmmda_model.networks.build_generator", "cfg": gcfg},
        "inferer": {
            "_target_": "jmmda_model.bundle.BundleInferer",
            "network": "@network_def",
            "weights": "$@bundle_root + '/models/model.pt'",
            "preprocess": pre,
            "model_card": card,
            "calibration": calibration or {},
            "device": "@device",
        },
        "run": ["$@inferer.run(@image, @mask, @output_dir)"],
    }


def _readme(ck: dict, meta: dict, size_divisor: int) -> str:
    card = ck.get("model_card", {})
    lines = [
        "# JMMDA-GAN CT-to-DWI synthesis — MONAI Bundle",
        "",
        f"**{SYNTHETIC_LABEL}.** Every image this bundle produces is synthetic. It may hide an infarct or show one",
        "that is not there; it must never be read as a real DWI, used for diagnosis or for treatment decisions.",
        "Output files are named `SYNTHETIC_DWI_*` and their NIfTI description says SYNTHETIC.",
        "",
        "## Run",
        "",
        "Needs the `jmmda-model` package (this project) installed next to MONAI.",
        "",
        "```",
        "python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\",
        "    --bundle_root . --image ct.nii.gz --mask brainmask.nii.gz --output_dir out",
        "```",
        "",
        "`--mask ''` computes a brain mask from the CT. The result equals `jmmda infer` with the source checkpoint.",
        "Models with a lesion head also write `SYNTHETIC_INFARCT_PROBABILITY_*.nii.gz` (the calibrated infarct",
        "probability, calibrated on phantoms only: a low probability never rules out an infarct).",
        "`models/model.ts` is the same generator as TorchScript (`jmmda infer --model models/model.ts` also runs it).",
        "",
        "## Input and output",
        "",
        f"- input: {meta['image_classes']}; spatial size a multiple of {size_divisor}",
        f"- output: {meta['pred_classes']}",
    ]
    slab = (ck.get("preprocess") or {}).get("slab_mm")
    if slab:
        lines.append(f"- slices: the model learnt from {slab:g} mm slices; a CT with thinner slices is averaged into slabs "
                     f"of about {slab:g} mm before the network and the result interpolated back onto its own slices "
                     "(its resolution across slices is the slabs')")
    lines += [
        "",
        "## Model card",
        "",
    ]
    for k, v in card.items():
        lines.append(f"- **{k}**: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    if card.get("phantom_trained"):
        lines += ["", "Trained on synthetic phantoms only: a demonstration model, not a clinical one."]
    lines += ["", f"Source checkpoint: {meta['changelog']['1.0.0']}", ""]
    return "\n".join(lines)


def export_bundle(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Writes the bundle folder ``out`` (built in a temporary folder beside it, then renamed into place)."""
    checkpoint, out = Path(checkpoint), Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"bundle folder {out} exists and is not empty (use --overwrite)")
    if not out.parent.is_dir():
        raise InputError(f"output folder does not exist: {out.parent}")
    net, ck = load_generator(checkpoint)
    meta = metadata(ck, int(net.size_divisor), checkpoint)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
        (tmp / "configs" / "inference.json").write_text(
            json.dumps(inference_config(ck["generator_config"], ck["preprocess"], ck.get("model_card", {}),
                                        ck.get("lesion_calibration")), indent=2, default=str))
        torch.save(net.state_dict(), tmp / "models" / "model.pt")
        export_torchscript(checkpoint, tmp / "models" / "model.ts")
        (tmp / "docs" / "README.md").write_text(_readme(ck, meta, int(net.size_divisor)))
        (tmp / "LICENSE").write_text(_license_text())
        os.chmod(tmp, 0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


class BundleInferer:
    """The bundle's inference: ``network`` (from ``network_def``) with ``weights``, then the ``jmmda infer`` pipeline."""

    def __init__(self, network: torch.nn.Module, weights: str, preprocess: dict, model_card: dict | None = None,
                 device: str = "auto", calibration: dict | None = None):
        from .inference import Synthesizer

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except Exception as exc:
            raise InputError(f"bundle weights {weights} cannot be loaded into network_def: {exc}") from exc
        self.synthesizer = Synthesizer(None, device=device, network=network.eval(),
                                       meta={"preprocess": preprocess, "model_card": model_card or {},
                                             "lesion_calibration": calibration or {}})

    def run(self, image: str, mask: str | None, output_dir: str) -> Path:
        from .clinical.imageio import read_image, write_image

        if not image:
            raise InputError("no input CT: pass --image <file or DICOM folder>")
        ct = read_image(image, "CT")
        m = read_image(mask, "brain mask") if mask else None
        out, _, info, prob = self.synthesizer(ct, m, return_probability=True)
        name = Path(image).name
        stem = strip_image_ext(name) or name  # a DICOM folder keeps its name
        dst = write_image(out, Path(output_dir) / f"SYNTHETIC_DWI_{stem or 'case'}.nii.gz")
        if prob is not None:  # the second output (network_data_format.outputs.infarct_probability)
            info["probability_file"] = write_image(
                prob, Path(output_dir) / f"SYNTHETIC_INFARCT_PROBABILITY_{stem or 'case'}.nii.gz").name
        info["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        (dst.parent / f"{dst.name[: -len('.nii.gz')]}.json").write_text(json.dumps(info, indent=1, default=str))
        return dst
