"""MONAI Label infer task: CT (+ optional brain mask) -> synthetic DWI NIfTI on the CT grid."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from jmmda_model import SYNTHETIC_LABEL
from jmmda_model.imageio import read_image, write_image
from jmmda_model.inference import Synthesizer

log = logging.getLogger(__name__)


class NoModelError(RuntimeError):
    """No trained checkpoint: the task refuses to run rather than use random weights."""


class CT2DWIInfer(InferTask):
    def __init__(self, model_paths: list[Path], device: str = "auto", description: str | None = None):
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=description or f"JMMDA-GAN CT-to-DWI synthesis. Output is a {SYNTHETIC_LABEL}.",
            config={"device": device},
        )
        self.model_paths = [Path(p) for p in model_paths]
        self.device = device
        self._syn: Synthesizer | None = None
        self._loaded_key = None
        self._lock = threading.Lock()

    def checkpoint(self) -> Path | None:
        return next((p for p in self.model_paths if p.is_file()), None)

    def is_valid(self) -> bool:
        return True  # listed even without a checkpoint; a call then answers 503 with the reason

    def info(self):
        i = super().info()
        ck = self.checkpoint()
        i["checkpoint"] = ck.name if ck else None
        i["ready"] = ck is not None
        i["output"] = SYNTHETIC_LABEL
        return i

    def synthesizer(self) -> Synthesizer:
        """Loads (or reloads, when training published a new file) the checkpoint."""
        ck = self.checkpoint()
        if ck is None:
            raise NoModelError(
                "no trained JMMDA-GAN checkpoint is installed (looked for: "
                + ", ".join(p.name for p in self.model_paths)
                + "); train one with POST /train/ct2dwi or copy a checkpoint into the app's model folder"
            )
        st = ck.stat()
        key = (str(ck), st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._syn is None or self._loaded_key != key:
                log.info("loading checkpoint %s", ck)
                self._syn = Synthesizer(ck, device=self.device)
                self._loaded_key = key
            return self._syn

    def __call__(self, request):
        syn = self.synthesizer()
        ct = read_image(request["image"], "CT")
        mask = read_image(request["label"], "brain mask") if request.get("label") else None
        out, _, info = syn(ct, mask)
        fd, path = tempfile.mkstemp(prefix="SYNTHETIC_DWI_", suffix=".nii.gz")
        os.close(fd)
        write_image(out, path)
        info["checkpoint"] = syn.path.name
        info["model_card"] = syn.model_card
        return path, info
