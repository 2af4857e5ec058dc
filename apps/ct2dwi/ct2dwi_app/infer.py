"""MONAI Label infer task: CT (+ optional brain mask) -> synthetic DWI NIfTI on the CT grid."""
from __future__ import annotations

import logging
import re
import tempfile
import threading
from pathlib import Path

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from jmmda_model import SYNTHETIC_LABEL
from jmmda_model.clinical.imageio import read_image, write_image
from jmmda_model.errors import InputError
from jmmda_model.inference import Synthesizer

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No trained checkpoint: the task refuses to run rather than use random weights."""


class CT2DWIInfer(InferTask):
    def __init__(self, versions, device: str = "auto", description: str | None = None, model_format: str = "checkpoint",
                 flip_average: bool = False):
        """``model_format``: "checkpoint" serves the version's checkpoint with the Python model; "torchscript"
        exports it once to ``model/exported/`` (checked against the model, atomic) and serves that file.
        ``flip_average``: each slice synthesised as the mean of the network's answers to it and to its mirror image
        (``jmmda infer --flip-average``)."""
        if model_format not in ("checkpoint", "torchscript"):
            raise ValueError(f"model_format must be 'checkpoint' or 'torchscript', got {model_format!r}")
        if not isinstance(flip_average, bool):
            raise ValueError(f"flip_average must be true or false, got {flip_average!r}")
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=description or f"JMMDA-GAN CT-to-DWI synthesis. Output is a {SYNTHETIC_LABEL}.",
            config={"device": device, "model_format": model_format, "flip_average": flip_average},
        )
        self.model_format = model_format
        self.flip_average = flip_average
        self.versions = versions
        self.device = device
        self._syn: Synthesizer | None = None
        self._loaded_key = None
        self._vid = None
        self._lock = threading.Lock()

    def checkpoint(self) -> Path | None:
        return self.versions.served_path()

    def served_name(self) -> str | None:
        vid = self.versions.served_id()
        return None if vid is None else ("jmmda_demo.pt" if vid == 0 else f"v{vid}")

    def is_valid(self) -> bool:
        return True  # listed even without a checkpoint; a call then answers 503 with the reason

    def info(self):
        i = super().info()
        i["checkpoint"] = self.served_name()
        i["version"] = self.versions.served_id()
        i["ready"] = i["version"] is not None
        i["output"] = SYNTHETIC_LABEL
        try:  # whether the served model gives an infarct-probability map (?probability=true / output=probability)
            i["probability_map"] = bool(self.synthesizer()[0].has_probability) if i["ready"] else False
        except Exception:  # noqa: BLE001 - an unusable checkpoint is reported by /infer itself (503)
            i["probability_map"] = False
        return i

    def synthesizer(self) -> tuple[Synthesizer, int]:
        """(synthesizer, version id) of the served model, loaded again when another version is served."""
        vid = self.versions.served_id()
        ck = None if vid is None else self.versions.path(vid)
        if ck is None:
            raise NoModelError(
                "no trained JMMDA-GAN checkpoint is installed (no published model version and no demo model); "
                "train one with POST /train/ct2dwi"
            )
        st = ck.stat()
        key = (str(ck), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._syn is None or self._loaded_key != key:
                log.info("loading checkpoint %s", ck)
                self._syn = Synthesizer(self._exported(ck, vid) if self.model_format == "torchscript" else ck,
                                        device=self.device, flip_average=self.flip_average)
                self._loaded_key = key
                self._vid = vid
            return self._syn, self._vid

    def _exported(self, ck: Path, vid: int) -> Path:
        """The TorchScript export of checkpoint ``ck`` (made once, keyed by the checkpoint's SHA-256)."""
        from jmmda_model.export import EXPORT_REVISION, export_torchscript, sha256

        # keyed by the export's revision too: an export made by an earlier release (no lesion logits) is made again
        dst = self.versions.model_dir / "exported" / f"v{vid}-{sha256(ck)[:16]}-r{EXPORT_REVISION}.ts"
        if not dst.exists():
            log.info("exporting %s to TorchScript %s", ck.name, dst)
            export_torchscript(ck, dst)
        return dst

    def run(self, ct_path: Path, mask_path: Path | None, out_dir: Path, ct_name: str | None = None,
            mask_name: str | None = None, single_file: bool = True, probability: bool = False) -> tuple[Path, dict]:
        """Synthesizes into ``out_dir`` (the caller owns and removes it); messages name ``ct_name``/``mask_name``.
        ``probability``: also writes the calibrated infarct-probability map (``info["probability_file"]``) when the
        served model has a lesion head; otherwise ``info["probability"]`` is None with the reason."""
        syn, vid = self.synthesizer()
        ct = read_image(ct_path, "CT", name=ct_name, single_file=single_file)
        mask = read_image(mask_path, "brain mask", name=mask_name, single_file=single_file) if mask_path else None
        try:
            out, _, info, prob = syn(ct, mask, return_probability=True)
        except InputError as exc:  # checks on the voxels: say which of the user's files failed
            msg = str(exc)
            for what, name in (("CT", ct_name), ("brain mask", mask_name)):
                if name and msg.startswith(f"{what}:"):
                    msg = f"{what} {name}:{msg[len(what) + 1:]}"
            raise InputError(msg) from exc
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"(\.nii\.gz|\.nii|\.nrrd|\.mha)$", "", ct_name or "case"))[:80]
        path = write_image(out, Path(out_dir) / f"SYNTHETIC_DWI_{stem or 'case'}.nii.gz")
        if probability and prob is not None:
            info["probability_file"] = str(write_image(
                prob, Path(out_dir) / f"SYNTHETIC_INFARCT_PROBABILITY_{stem or 'case'}.nii.gz"))
        elif not probability:
            info.pop("probability", None)
        info["checkpoint"] = "jmmda_demo.pt" if vid == 0 else f"v{vid}"
        info["version"] = vid
        info["model_card"] = syn.model_card
        info["served_file"] = syn.path.name
        return path, info

    def __call__(self, request):
        """MONAI Label's task interface (not routed by the hardened server, which calls ``run``)."""
        out_dir = Path(request.get("output_dir") or tempfile.mkdtemp(prefix="ct2dwi-"))
        return self.run(Path(request["image"]), Path(request["label"]) if request.get("label") else None, out_dir,
                        single_file=True)
