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
    (4.5-5.1 GB RSS each, 8.6 GB for two). Now each is refused from its header (16 + 8 bytes x 262 M voxels ~ 6 GB
    estimated > the 3 GB budget) before any voxel is decompressed."""
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
