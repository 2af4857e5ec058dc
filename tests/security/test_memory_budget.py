"""Round two (#22, item 2): memory is estimated from the header and refused before decoding; five concurrent
float64 bombs under the voxel limit keep the server far below the budget."""
import threading
import time

import numpy as np
import pytest
import requests

from server_utils import sample_server
from test_server_security import PeakRSS, gzip_stream, nifti_bytes

BUDGET = 3 * 2**30


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("mem"), n=1).wait()
    yield s
    s.stop()


def test_five_concurrent_float64_bombs_stay_under_budget(srv):
    """512 x 512 x 1000 float64 (under the voxel limit, 2 GB decoded, a 2 MB gzip): the landed server decoded it
    (4.5-5.1 GB RSS each, 8.6 GB for two). Now each is refused from its header ((16 + 4) bytes x 262 M voxels, float64
    being decoded straight to float32: ~5 GB estimated > the 3 GB budget) before any voxel is decompressed."""
    data = gzip_stream(nifti_bytes((512, 512, 1000), np.float64), 512 * 512 * 1000 * 8)
    assert len(data) < 4 * 2**20
    results = []

    def go(i):
        r = requests.post(f"{srv.url}/infer/ct2dwi?output=json", files={"file": (f"bomb{i}.nii.gz", data)}, timeout=300)
        results.append((r.status_code, r.json().get("detail", "")))

    t0 = time.time()
    with PeakRSS(srv.proc.pid) as rss:
        threads = [threading.Thread(target=go, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    codes = [c for c, _ in results]
    # 1 running + 8 queued by default: all five are answered, none decoded
    assert codes == [422] * 5, results
    assert all("memory budget" in d and "bomb" in d for _, d in results)
    assert rss.peak < BUDGET, f"server RSS peaked at {rss.peak / 2**30:.2f} GiB"
    assert time.time() - t0 < 120


F64_PROBE = r"""
import resource, sys
import SimpleITK as sitk
from jmmda_model.clinical.imageio import read_image
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = read_image(sys.argv[1], "CT")
print(img.GetPixelIDTypeAsString(), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


def test_float64_nifti_is_decoded_straight_to_float32(tmp_path):
    """#22 item 2: a float64 NIfTI is never held as float64. The landed reader (ITK, then a cast) peaked at about
    16 bytes per voxel; decoding chunk by chunk into float32 peaks near 8 (the float32 array and the image made
    from it). Values, scaling and geometry equal ITK's own reading."""
    import subprocess
    import sys

    import nibabel as nib
    import SimpleITK as sitk
    from scipy.spatial.transform import Rotation

    from jmmda_model.clinical.imageio import read_image

    shape = (256, 256, 128)
    z = np.linspace(-1000, 1500, shape[2])
    vol = np.broadcast_to(z, shape) + np.arange(shape[0])[:, None, None] * 0.25  # compresses fast, exact in float32
    aff = np.eye(4)
    aff[:3, :3] = Rotation.from_euler("xyz", [5, -8, 12], degrees=True).as_matrix() @ np.diag([0.5, 0.6, 2.0])
    aff[:3, 3] = [10, -20, 5]
    img = nib.Nifti1Image(np.ascontiguousarray(vol, np.float64), aff)
    img.header.set_slope_inter(2.0, -3.0)
    path = tmp_path / "ct_float64.nii.gz"
    nib.save(img, str(path))

    mine, ref = read_image(path, "CT"), sitk.ReadImage(str(path))
    assert mine.GetPixelID() == sitk.sitkFloat32 and ref.GetPixelID() == sitk.sitkFloat64
    for get in ("GetOrigin", "GetSpacing", "GetDirection", "GetSize"):
        np.testing.assert_allclose(getattr(mine, get)(), getattr(ref, get)(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(mine), sitk.GetArrayFromImage(ref).astype(np.float32))

    out = subprocess.run([sys.executable, "-c", F64_PROBE, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    kind, peak = out.stdout.strip().rsplit(" ", 1)
    peak = int(peak)
    assert kind == "32-bit float"
    per_voxel = peak / np.prod(shape)
    assert per_voxel < 11.0, f"reading a float64 NIfTI peaked at {per_voxel:.1f} bytes per voxel"
