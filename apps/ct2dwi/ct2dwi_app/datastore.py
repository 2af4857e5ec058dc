"""Local datastore that refuses ids/tags able to escape the studies folder.

MONAI Label 0.8.5 joins the ``tag`` query parameter straight into a path, so
``PUT /datastore/label?tag=../../x`` writes outside the studies folder. Every id and tag is
checked here (and again by the server middleware, which answers 400 before any work is done)."""
from __future__ import annotations

import re
import threading
from contextlib import contextmanager

from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_name(value: str | None) -> bool:
    return value is None or value == "" or (isinstance(value, str) and bool(SAFE_NAME.fullmatch(value)) and ".." not in value)


def check_name(value: str | None, what: str) -> None:
    if not is_safe_name(value):
        raise MONAILabelException(
            MONAILabelError.INVALID_INPUT, f"invalid {what} {value!r}: use letters, digits, '.', '_' and '-' only"
        )


class SafeLocalDatastore(LocalDatastore):
    def save_label(self, image_id, label_filename, label_tag, label_info):
        check_name(image_id, "image id")
        check_name(label_tag, "label tag")
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_label(self, label_id, label_tag):
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        return super().remove_label(label_id, label_tag)

    def add_image(self, image_id, image_filename, image_info):
        check_name(image_id, "image id")
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id):
        check_name(image_id, "image id")
        return super().remove_image(image_id)

    def get_label_uri(self, label_id, label_tag):
        check_name(label_tag, "label tag")
        return super().get_label_uri(label_id, label_tag)

    def update_label_info(self, label_id, label_tag, info):
        check_name(label_tag, "label tag")
        return super().update_label_info(label_id, label_tag, info)


#: a DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: the most instances one CT series may have, and its largest size on disk, when it is downloaded from DICOMweb
MAX_SERIES_INSTANCES = 4000
#: how many series may download at once (each may hold up to the upload limit on disk while it does); more wait
MAX_PARALLEL_DOWNLOADS = 2
_DOWNLOAD_SLOTS = threading.BoundedSemaphore(MAX_PARALLEL_DOWNLOADS)
#: one lock per series being asked for (by cache folder and UID), with the number of requests holding or awaiting
#: it: a second request for the same series waits and then finds it cached; other series do not wait for it
_SERIES_TURNS: dict[tuple[str, str], list] = {}
_SERIES_TURNS_GUARD = threading.Lock()


@contextmanager
def _series_turn(cache, series_uid: str):
    """Holds the lock of one series in one cache folder; the lock is forgotten when no request holds or awaits it,
    so a long-running server keeps no entry per series it ever served."""
    key = (str(cache), series_uid)
    with _SERIES_TURNS_GUARD:
        turn = _SERIES_TURNS.setdefault(key, [threading.Lock(), 0])
        turn[1] += 1
    try:
        with turn[0]:
            yield
    finally:
        with _SERIES_TURNS_GUARD:
            turn[1] -= 1
            if turn[1] == 0:
                del _SERIES_TURNS[key]


class DatastoreError(RuntimeError):
    """The DICOMweb server failed or answered with something that is not the series asked for (the server
    answers 502: neither the user's request nor this server is at fault)."""


class SafeDICOMWebDatastore:
    """Methods that replace MONAI Label 0.8.5's ``DICOMWebDatastore.get_image_uri`` (mixed into it by
    :func:`harden_dicomweb`). MONAI Label downloaded a series straight into its cache folder, so an interrupted
    download left a partial series that was then taken as the cached CT for good (a series missing its last
    slices reads as a shorter head); it named each file after the SOPInstanceUID the PACS sent, unchecked; and it
    took whatever instances the PACS returned. Here the series is downloaded into a private folder beside the
    cache, each instance checked (its SOPInstanceUID a DICOM UID, its SeriesInstanceUID the one asked for, at most
    ``MAX_SERIES_INSTANCES`` and the upload limit, ``uploads.MAX_UPLOAD_BYTES``), and the folder renamed into place only when complete,
    with a marker; a cache folder without the marker (a download interrupted by an older version) is fetched
    again. The series is returned as a folder: the project's DICOM reader reads it with all its series checks.
    Different series download side by side, at most ``MAX_PARALLEL_DOWNLOADS`` at once; a request for a series
    that is downloading waits for that download and takes its folder."""

    def get_image_uri(self, image_id: str) -> str:
        import json
        import shutil
        import tempfile
        from pathlib import Path

        check_name(image_id, "image id")
        if not UID.fullmatch(image_id) or len(image_id) > 64:
            raise MONAILabelException(MONAILabelError.INVALID_INPUT, f"invalid series UID {image_id!r}")
        cache = Path(self._datastore.image_path()).resolve()
        cache.mkdir(parents=True, exist_ok=True)
        final, marker = cache / image_id, cache / f".{image_id}.complete"
        with _series_turn(cache, image_id):
            if final.is_dir() and marker.is_file():
                return str(final)
            for stale in cache.glob(f".{image_id}.partial-*"):  # left by a killed process
                shutil.rmtree(stale, ignore_errors=True)
            part = Path(tempfile.mkdtemp(prefix=f".{image_id}.partial-", dir=cache))
            try:
                with _DOWNLOAD_SLOTS:
                    n = self._download_series(image_id, part)
                if final.exists():  # left by an older version's download, which may be partial
                    shutil.rmtree(final)
                part.rename(final)
                tmp = cache / f".{image_id}.complete.tmp"
                tmp.write_text(json.dumps({"instances": n}))
                tmp.replace(marker)
            finally:
                shutil.rmtree(part, ignore_errors=True)
        return str(final)

    def _download_series(self, series_uid: str, folder) -> int:
        from pydicom.dataset import Dataset

        from . import uploads

        try:
            found = [s for s in self._client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})
                     if s.get("0020000E", {}).get("Value") == [series_uid]]
            if not found:
                raise DatastoreError(f"the DICOMweb server does not list series {series_uid}")
            study_uid = str(Dataset.from_json(found[0]).StudyInstanceUID)
            if not UID.fullmatch(study_uid):
                raise DatastoreError(f"the DICOMweb server gave series {series_uid} an invalid StudyInstanceUID")
            n, size, limit = 0, 0, uploads.MAX_UPLOAD_BYTES  # a series is as large as an upload may be
            for ds in self._client.iter_series(study_uid, series_uid):
                sop = str(getattr(ds, "SOPInstanceUID", ""))
                if not UID.fullmatch(sop) or len(sop) > 64:
                    raise DatastoreError(f"the DICOMweb server sent an instance of series {series_uid} with an "
                                         f"invalid SOPInstanceUID {sop[:80]!r}")
                if str(getattr(ds, "SeriesInstanceUID", "")) != series_uid:
                    raise DatastoreError(f"the DICOMweb server sent instance {sop} of another series when asked "
                                         f"for series {series_uid}")
                n += 1
                if n > MAX_SERIES_INSTANCES:
                    raise DatastoreError(f"series {series_uid} has more than {MAX_SERIES_INSTANCES} instances")
                path = folder / f"{sop}.dcm"
                if path.exists():
                    raise DatastoreError(f"the DICOMweb server sent instance {sop} of series {series_uid} twice")
                ds.save_as(path)
                size += path.stat().st_size
                if size > limit:
                    raise DatastoreError(f"series {series_uid} is larger than {limit // 2**20} MB "
                                         "(CT2DWI_MAX_UPLOAD_MB)")
        except DatastoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - the PACS's own failure (connection, HTTP status, bad multipart)
            raise DatastoreError(f"downloading series {series_uid} from the DICOMweb server failed: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        if n == 0:
            raise DatastoreError(f"the DICOMweb server sent no instance of series {series_uid}")
        return n


def harden_dicomweb(ds):
    """Gives MONAI Label's DICOMweb datastore ``ds`` the checked, atomic series download of
    :class:`SafeDICOMWebDatastore` (its class becomes a subclass adding that method; no state changes)."""
    from monailabel.datastore.dicom import DICOMWebDatastore

    if isinstance(ds, DICOMWebDatastore) and not isinstance(ds, SafeDICOMWebDatastore):
        ds.__class__ = type("SafeDICOMWebDatastore", (SafeDICOMWebDatastore, type(ds)), {})
    return ds
