"""MONAI Label app: JMMDA-GAN CT-to-DWI synthesis (infer + train).

Conf options (``--conf key value``):
  device        auto | cpu | cuda[:N]        (default auto: GPU + mixed precision when available)
  demo_model    true | false                 (default true: the shipped phantom-trained demo checkpoint is
                                              model version 0, served until a retrained version is published)
  model_format  checkpoint | torchscript     (default checkpoint; torchscript: the served version's TorchScript
                                              export, made once)
  flip_average  true | false                 (default false; true: each slice synthesised as the mean of the
                                              network's answers to it and to its mirror image, as `jmmda infer
                                              --flip-average`: twice the network time)

Models: every published model is a version under model/versions/ (see ct2dwi_app/versions.py); the served one
is named by model/served.json and can be promoted or rolled back without a restart.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402

from ct2dwi_app.conf import conf_flag  # noqa: E402
from ct2dwi_app.datastore import SafeLocalDatastore, harden_dicomweb  # noqa: E402
from ct2dwi_app.infer import CT2DWIInfer  # noqa: E402
from ct2dwi_app.train import CT2DWITrain  # noqa: E402
from ct2dwi_app.versions import ModelVersions  # noqa: E402

log = logging.getLogger(__name__)

PUBLISHED = "jmmda.pt"
DEMO = "jmmda_demo.pt"


class CT2DWIApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = Path(app_dir) / "model"
        self.model_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.model_dir.glob(f".{PUBLISHED}.*.tmp"):  # left by a publish of an older version
            stale.unlink(missing_ok=True)
        self.device = conf.get("device", "auto")
        #: --conf model_format torchscript: serve the TorchScript export of the served version
        self.model_format = str(conf.get("model_format", "checkpoint")).lower()
        use_demo = str(conf.get("demo_model", "true")).lower() in ("1", "true", "yes")
        self.flip_average = conf_flag(conf, "flip_average", False)
        self.versions = ModelVersions(self.model_dir, self.model_dir / DEMO if use_demo else None)
        self.versions.sweep()
        self.versions.import_legacy(self.model_dir / PUBLISHED)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="ct2dwi",
            description="JMMDA-GAN: synthetic DWI from head CT + brain mask (SYNTHETIC - not for diagnosis)",
            version="0.1.0",
        )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            if settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI:
                # A DICOMweb CT is read from its downloaded series by the project's own reader (its series
                # checks refuse mixed spacing, gaps, unexplained shears; its notes reach the answer). MONAI
                # Label's NIfTI conversion skips those checks and leaves a copy of every converted CT in TMPDIR.
                log.info("DICOMweb datastore: CTs are read from their downloaded series, not converted to NIfTI")
                settings.MONAI_LABEL_DICOMWEB_CONVERT_TO_NIFTI = False
            return harden_dicomweb(super().init_datastore())
        return SafeLocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self):
        return {"ct2dwi": CT2DWIInfer(self.versions, device=self.device, model_format=self.model_format,
                                      flip_average=self.flip_average)}

    def init_trainers(self):
        return {"ct2dwi": CT2DWITrain(self.model_dir, self.versions)}

    def infer_task(self, model: str) -> CT2DWIInfer | None:
        return self._infers.get(model)

    def train_task(self, model: str) -> CT2DWITrain | None:
        return self._trainers.get(model)

    def init_strategies(self):
        return {}

    def init_scoring_methods(self):
        return {}
