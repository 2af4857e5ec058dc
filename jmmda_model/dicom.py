"""DICOM series import (SimpleITK/GDCM) and synthetic-DWI DICOM export."""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from .imageio import InputError


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> sitk.Image:
    """Reads one DICOM series from a folder (the only one, or the one with ``series_uid``),
    applying rescale slope/intercept (CT in HU)."""
    folder = Path(folder)
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ()
    if not uids:
        raise InputError(f"no DICOM series found in {folder}")
    if series_uid is None:
        if len(uids) > 1:
            raise InputError(f"{folder} holds {len(uids)} DICOM series; choose one by SeriesInstanceUID: {', '.join(uids)}")
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"series {series_uid} not found in {folder}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) < 2:
        raise InputError(f"DICOM series {series_uid} has {len(files)} slice(s); a 3-D volume is required")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series {series_uid}: {exc}") from exc
    return img
