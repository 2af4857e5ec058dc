"""CT -> DWI tissue prior: the lookup table the networks must beat, kept inside their checkpoints.

Mean normalised DWI per (Gaussian-smoothed CT HU bin, distance-to-brain-edge bin), fitted on the training cases.
It predicts normal tissue well (grey/white matter, CSF, the cortex next to the skull) and knows nothing of
infarcts. Models trained with ``residual_prior`` predict a residual over it (and a lesion probability that
brightens it), so a trained model starts from the table instead of from zero.

Contralateral lift (``mirror_lift_hu`` > 0): a voxel a few HU lower than its mirror image across the mid-sagittal
plane is binned at the mirror's HU, up to ``mirror_lift_hu`` higher. An early infarct is 1-12 HU hypodense; read
as HU alone it looks like white matter or CSF, and the table maps it to a darker DWI than normal brain - the opposite
of the truth. Lifted, the table expects normal tissue there (the residual and the lesion head decide the rest),
while CSF, old infarcts and other defects (>= 20 HU below their mirror) keep their own, dark, value.

Stored as plain lists (``to_dict``) inside ``PreprocessConfig.tissue_prior``: checkpoints, TorchScript metadata
and MONAI Bundles carry it with the other preprocessing settings.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

HU_EDGES = np.arange(-20.0, 82.0, 2.0)
DIST_EDGES = np.array([0, 1, 2, 3, 4, 6, 8, 10, 13, 16, 20, 25, 30, 40, 60], float)


def _smoothed(ct_hu):
    return ndi.gaussian_filter(np.asarray(ct_hu, np.float32), (0.0, 1.0, 1.0))


def _bins(ct_hu, brain, spacing_zyx, hu_edges, dist_edges, mirror_hu=None, lift: float = 0.0):
    hu = _smoothed(ct_hu)
    if lift > 0:
        if mirror_hu is None:
            raise ValueError("this tissue prior lifts hypodense voxels to their mirror image: it needs the mirrored CT")
        hu += np.clip(_smoothed(mirror_hu) - hu, 0.0, lift)
    dist = ndi.distance_transform_edt(brain > 0, sampling=spacing_zyx)
    return np.digitize(hu, hu_edges), np.digitize(dist, dist_edges)


class TissuePrior:
    def __init__(self, table=None, hu_edges=HU_EDGES, dist_edges=DIST_EDGES, mirror_lift_hu: float = 0.0):
        if not (np.isfinite(mirror_lift_hu) and 0.0 <= float(mirror_lift_hu) <= 40.0):
            raise ValueError(f"mirror_lift_hu must be in [0, 40] HU, got {mirror_lift_hu}")
        self.mirror_lift_hu = float(mirror_lift_hu)
        self.hu_edges = np.asarray(hu_edges, float)
        self.dist_edges = np.asarray(dist_edges, float)
        self.table = None if table is None else np.asarray(table, np.float32)

    def fit(self, cases) -> TissuePrior:
        """``cases``: objects with ct_hu, brain, dwi (normalised), spacing_zyx and, with a lift, mirror_hu
        (``data.LoadedCase``)."""
        s = np.zeros((len(self.hu_edges) + 1, len(self.dist_edges) + 1))
        n = np.zeros_like(s)
        for lc in cases:
            hb, db = _bins(lc.ct_hu, lc.brain, lc.spacing_zyx, self.hu_edges, self.dist_edges,
                           getattr(lc, "mirror_hu", None), self.mirror_lift_hu)
            sel = lc.brain > 0
            np.add.at(s, (hb[sel], db[sel]), lc.dwi[sel])
            np.add.at(n, (hb[sel], db[sel]), 1)
        if n.sum() == 0:
            raise ValueError("cannot fit the tissue prior: no brain voxels in the training cases")
        glob = s.sum() / n.sum()
        hu_marg = s.sum(1) / np.maximum(n.sum(1), 1)  # empty cells: the HU bin's mean over all distances
        self.table = np.where(n > 0, s / np.maximum(n, 1),
                              np.where(n.sum(1, keepdims=True) > 0, hu_marg[:, None], glob)).astype(np.float32)
        return self

    def predict(self, ct_hu, brain, spacing_zyx, mirror_hu=None) -> np.ndarray:
        """(z, y, x) prior DWI (normalised units), 0 outside the brain. ``mirror_hu``: the CT mirrored across its
        mid-sagittal plane (needed with a lift; the CT itself when the plane is not trusted: no lift)."""
        if self.table is None:
            raise ValueError("tissue prior not fitted")
        hb, db = _bins(ct_hu, brain, spacing_zyx, self.hu_edges, self.dist_edges, mirror_hu, self.mirror_lift_hu)
        return (self.table[hb, db] * (brain > 0)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"hu_edges": [float(v) for v in self.hu_edges], "dist_edges": [float(v) for v in self.dist_edges],
                "mirror_lift_hu": self.mirror_lift_hu,
                "table": [[round(float(v), 5) for v in row] for row in self.table]}

    @classmethod
    def from_dict(cls, d: dict) -> TissuePrior:
        unknown = set(d) - {"table", "hu_edges", "dist_edges", "mirror_lift_hu"}
        if unknown:
            raise ValueError(f"malformed tissue prior (unknown keys {sorted(unknown)})")
        t = cls(d["table"], d["hu_edges"], d["dist_edges"], d.get("mirror_lift_hu", 0.0))  # absent: written before the lift
        if t.table.shape != (len(t.hu_edges) + 1, len(t.dist_edges) + 1) or not np.isfinite(t.table).all():
            raise ValueError("malformed tissue prior (table shape or values)")
        return t
