"""A DICOMweb datastore's series download (ct2dwi_app.datastore.SafeDICOMWebDatastore), against a fake DICOMweb
client that misbehaves the ways a PACS or the network can: cut off mid-series, an instance UID with a path in it,
instances of another series, too many instances, and a partial cache folder left by an older version.

MONAI Label 0.8.5 downloaded straight into its cache folder and took any non-empty folder as the cached series, so
a download cut off after 3 of 16 slices left a 3-slice "CT" for good; it named files after the SOPInstanceUID the
server sent. The end-to-end path (Orthanc, the served answer, nothing left in TMPDIR) is
tests/test_clinical_io.py::test_server_on_a_dicomweb_datastore_offline."""
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
import SimpleITK as sitk

from jmmda_model.clinical.dicom import read_dicom_series, write_ct_series

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps" / "ct2dwi"))
from ct2dwi_app import datastore as dsmod  # noqa: E402


class FakeClient:
    """search_for_series / iter_series of dicomweb_client over a list of instances; ``fail_after`` cuts the
    stream (ConnectionError) after that many instances."""

    def __init__(self, instances, fail_after=None):
        self.instances, self.fail_after, self.calls = instances, fail_after, 0

    def search_for_series(self, search_filters):
        uid = search_filters["SeriesInstanceUID"]
        return [{"0020000E": {"vr": "UI", "Value": [uid]}, "0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]

    def iter_series(self, study_uid, series_uid):
        self.calls += 1
        for i, ds in enumerate(self.instances):
            if self.fail_after is not None and i == self.fail_after:
                raise ConnectionError("connection reset by peer")
            yield pydicom.dcmread(ds) if isinstance(ds, Path) else ds


class Store(dsmod.SafeDICOMWebDatastore):
    def __init__(self, cache: Path, client):
        self._datastore = SimpleNamespace(image_path=lambda: str(cache))
        self._client = client


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    ct = sitk.Image(48, 40, 16, sitk.sitkInt16) - 1000
    ct.SetSpacing((4.0, 4.0, 5.0))
    d = tmp_path_factory.mktemp("series")
    write_ct_series(ct, d)
    files = sorted(d.iterdir())
    return pydicom.dcmread(files[0]).SeriesInstanceUID, files


def test_a_download_cut_off_leaves_nothing_and_the_next_one_is_whole(series, tmp_path):
    uid, files = series
    cache = tmp_path / "cache"
    store = Store(cache, FakeClient(files, fail_after=3))
    with pytest.raises(dsmod.DatastoreError, match="ConnectionError"):
        store.get_image_uri(uid)
    assert list(cache.iterdir()) == []  # no partial series, no marker
    store._client = FakeClient(files)
    folder = Path(store.get_image_uri(uid))
    assert folder == cache / uid and len(list(folder.iterdir())) == 16
    assert read_dicom_series(folder).GetSize() == (48, 40, 16)
    assert Path(store.get_image_uri(uid)) == folder and store._client.calls == 1  # cached: not fetched again


def test_a_partial_cache_of_an_older_version_is_fetched_again(series, tmp_path):
    uid, files = series
    cache = tmp_path / "cache"
    (cache / uid).mkdir(parents=True)  # what MONAI Label's own download left when cut off: 3 of 16 slices
    for f in files[:3]:
        (cache / uid / f.name).write_bytes(f.read_bytes())
    store = Store(cache, FakeClient(files))
    folder = Path(store.get_image_uri(uid))
    assert len(list(folder.iterdir())) == 16 and store._client.calls == 1


def _changed(files, i, **fields):
    out = [pydicom.dcmread(f) for f in files]
    for k, v in fields.items():
        setattr(out[i], k, v)
    return out


@pytest.mark.parametrize("fields, says", [
    ({"SOPInstanceUID": "../../evil"}, "invalid SOPInstanceUID"),
    ({"SOPInstanceUID": "1.2/3"}, "invalid SOPInstanceUID"),
    ({"SeriesInstanceUID": "1.2.3.4.5"}, "another series"),
])
def test_instances_that_are_not_the_series_are_refused_and_nothing_is_written(series, tmp_path, fields, says):
    uid, files = series
    cache = tmp_path / "a" / "cache"
    store = Store(cache, FakeClient(_changed(files, 5, **fields)))
    with pytest.raises(dsmod.DatastoreError, match=says):
        store.get_image_uri(uid)
    assert [p for p in (tmp_path / "a").rglob("*") if p != cache] == []


def test_a_series_past_the_limits_is_refused(series, tmp_path, monkeypatch):
    uid, files = series
    monkeypatch.setattr(dsmod, "MAX_SERIES_INSTANCES", 10)
    with pytest.raises(dsmod.DatastoreError, match="more than 10 instances"):
        Store(tmp_path / "c1", FakeClient(files)).get_image_uri(uid)
    monkeypatch.setattr(dsmod, "MAX_SERIES_INSTANCES", 4000)
    from ct2dwi_app import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", int(0.01 * 2**20))  # CT2DWI_MAX_UPLOAD_MB 0.01
    with pytest.raises(dsmod.DatastoreError, match="larger than"):
        Store(tmp_path / "c2", FakeClient(files)).get_image_uri(uid)
    assert list((tmp_path / "c1").iterdir()) == [] and list((tmp_path / "c2").iterdir()) == []


def test_an_image_id_that_is_not_a_uid_is_refused(series, tmp_path):
    from monailabel.interfaces.exception import MONAILabelException

    _, files = series
    store = Store(tmp_path / "cache", FakeClient(files))
    for bad in ("../x", "abc", "1.2." + "3" * 70):
        with pytest.raises(MONAILabelException):
            store.get_image_uri(bad)
    assert store._client.calls == 0


class CrowdClient(FakeClient):
    """Serves several series (``by_series``: UID -> instances) and counts the downloads running at once. Each
    download waits until ``expect`` downloads run together or ``wait_s`` has passed, so that downloads able to run
    side by side are seen doing so, and downloads made to wait are seen one at a time."""

    def __init__(self, by_series, expect, wait_s):
        super().__init__([])
        self.by_series, self.expect, self.wait_s = by_series, expect, wait_s
        self.running = self.most = 0
        self.lock = threading.Lock()

    def iter_series(self, study_uid, series_uid):
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            t0 = time.monotonic()
            while self.running < self.expect and time.monotonic() - t0 < self.wait_s:
                time.sleep(0.02)
            yield from self.by_series[series_uid]
        finally:
            with self.lock:
                self.running -= 1


def _crowd(store, uids):
    """get_image_uri of each UID, each from its own thread at once; the folders (or exceptions) in order."""
    out = [None] * len(uids)

    def ask(i, uid):
        try:
            out[i] = Path(store.get_image_uri(uid))
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out[i] = exc

    threads = [threading.Thread(target=ask, args=(i, u)) for i, u in enumerate(uids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def test_series_download_side_by_side_within_a_bound_and_one_series_once(series, tmp_path):
    """One DICOMweb download at a time made every radiologist wait for every other one's series. Different series
    now download side by side, at most ``MAX_PARALLEL_DOWNLOADS`` (2) at once; two requests for the same series
    download it once and both get the whole series; no lock is kept per series once nobody asks for it.
    Mutations: the one server-wide lock back fails the first check (one download at a time); no bound on
    downloads at once fails the second (three at once)."""
    _, files = series

    def as_series(new_uid):
        out = [pydicom.dcmread(f) for f in files]
        for ds in out:
            ds.SeriesInstanceUID = new_uid
        return out

    uids = ["1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", "1.2.826.0.1.3680043.8.498.3"]
    by_series = {u: as_series(u) for u in uids}
    # two series: both run at once
    store = Store(tmp_path / "c1", CrowdClient(by_series, expect=2, wait_s=3))
    got = _crowd(store, uids[:2])
    assert store._client.most == 2 and store._client.calls == 2, got
    assert [len(list(g.iterdir())) for g in got] == [16, 16] and got == [tmp_path / "c1" / u for u in uids[:2]]
    # three series: never more than two at once, and all three whole
    store = Store(tmp_path / "c2", CrowdClient(by_series, expect=3, wait_s=1.5))
    got = _crowd(store, uids)
    assert store._client.most == dsmod.MAX_PARALLEL_DOWNLOADS == 2 and store._client.calls == 3, got
    assert [read_dicom_series(g).GetSize() for g in got] == [(48, 40, 16)] * 3
    # the same series asked twice at once: downloaded once, both answers the one whole folder
    store = Store(tmp_path / "c3", CrowdClient(by_series, expect=2, wait_s=1))
    got = _crowd(store, uids[:1] * 2)
    assert store._client.calls == 1 and got == [tmp_path / "c3" / uids[0]] * 2 and len(list(got[0].iterdir())) == 16
    assert dsmod._SERIES_TURNS == {}
