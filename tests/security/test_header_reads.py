"""Round two (#22, item 1): no file is read through an image header, however the header is padded, uploaded or
stored in the datastore. Against a real server on loopback."""
import gzip
import json

import numpy as np
import pytest
import requests

from jmmda_model.clinical.imageio import MAX_HEADER_BYTES, probe_image
from jmmda_model.errors import InputError
from server_utils import copy_app, copy_studies, Server

SECRET = bytes(range(256)) * 2  # 512 bytes = an 8 x 8 x 8 uchar "volume" the attacker wants to read


def padded_nrrd(target, pad_lines=3000, extra=b"") -> bytes:
    pad = b"".join(b"# padding comment %d xxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" % i for i in range(pad_lines))
    return (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n" + pad + extra
            + b"data file: " + str(target).encode() + b"\n\n")


def padded_mha(target, pad_lines=3000) -> bytes:
    pad = b"".join(b"Comment%d = padding xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" % i for i in range(pad_lines))
    return (b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\n" + pad
            + b"ElementDataFile = " + str(target).encode() + b"\n")


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    p = tmp_path_factory.mktemp("outside") / "secret.raw"
    p.write_bytes(SECRET)
    return p


@pytest.fixture(scope="module")
def srv(tmp_path_factory, secret):
    base = tmp_path_factory.mktemp("hdr")
    studies = copy_studies(base / "studies", n=1)
    # an image stored in the datastore whose header names a file outside it (as a careless admin could store)
    (studies / "stored_evil.nrrd").write_bytes(padded_nrrd(secret))
    s = Server(copy_app(base / "app", with_demo=True), studies).wait()
    yield s
    s.stop()


def _post(url, name, data):
    return requests.post(f"{url}/infer/ct2dwi?output=json", files={"file": (name, data)}, timeout=120)


def _assert_refused(r, secret):
    assert r.status_code == 422, r.text[:300]
    body = r.text
    assert "separate data file" in r.json()["detail"] or "header" in r.json()["detail"]
    assert str(secret) not in body and "percentile" not in body  # nothing of the named file comes back


@pytest.mark.parametrize("pad", [0, 3000, 20000])
def test_padded_nrrd_data_file_upload_refused(srv, secret, pad):
    """The landed check read 200 lines / 64 KiB; 3000 comment lines (~150 KiB) hid the field from it."""
    data = padded_nrrd(secret, pad)
    r = _post(srv.url, "scan.nrrd", data)
    if len(data) > MAX_HEADER_BYTES:
        assert r.status_code == 422 and "header longer" in r.json()["detail"]
    else:
        _assert_refused(r, secret)


def test_padded_mha_element_data_file_upload_refused(srv, secret):
    _assert_refused(_post(srv.url, "scan.mha", padded_mha(secret)), secret)


def test_gzip_byte_skip_pointing_at_another_volume_refused(srv, secret):
    other = srv.studies / "phantom_000.nii.gz"
    data = padded_nrrd(other, 2000, extra=b"byte skip: 352\n").replace(b"encoding: raw", b"encoding: gzip")
    _assert_refused(_post(srv.url, "scan.nrrd", data), secret)


def test_nrrd_content_under_another_name_is_still_checked(srv, secret):
    """ITK picks its NRRD reader by the magic bytes, so a .mha file holding an NRRD header gets NRRD rules."""
    _assert_refused(_post(srv.url, "scan.mha", padded_nrrd(secret, 3000)), secret)


def test_stored_hostile_header_is_not_read_through_image_id(srv, secret):
    r = requests.post(f"{srv.url}/infer/ct2dwi?image=stored_evil&output=json", timeout=120)
    assert r.status_code in (404, 422), r.text[:300]  # refused, or not listed at all
    assert str(secret) not in r.text and "percentile" not in r.text


def test_probe_refuses_every_detached_form(tmp_path, secret):
    cases = {
        "a.nrrd": padded_nrrd(secret, 5000),
        "b.mha": padded_mha(secret, 5000),
        "c.nrrd": b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\ndatafile: x\n\n",
        "d.nrrd": b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n",  # header only
        "e.mha": b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\n",  # no ElementDataFile
        "f.nrrd": b"ObjectType = Image\nElementDataFile = LOCAL\n",  # not NRRD at all
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(InputError) as e:
            probe_image(p, "CT", single_file=True)
        assert name in str(e.value)


def test_attached_nrrd_and_mha_still_accepted(tmp_path):
    vol = np.arange(8 * 8 * 8, dtype=np.int16).tobytes()
    nrrd = (b"NRRD0004\n# a comment\nkey:=value\ntype: short\ndimension: 3\nsizes: 8 8 8\nendian: little\n"
            b"encoding: gzip\n\n" + gzip.compress(vol))
    mha = (b"ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_SHORT\nElementDataFile = LOCAL\n" + vol)
    for name, data in (("ok.nrrd", nrrd), ("ok.mha", mha)):
        p = tmp_path / name
        p.write_bytes(data)
        assert tuple(probe_image(p, "CT", single_file=True)) == (8, 8, 8), json.dumps(name)
