import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "studies"
DEMO_MODEL = ROOT / "apps" / "ct2dwi" / "model" / "jmmda_demo.pt"

# Two threads a process on CI's 2 cores, also with pytest-xdist's two workers (pytest.ini: -n 2), and OpenMP threads
# that sleep instead of spinning while they wait for work: with two workers (and the servers and CLI processes they
# start, which inherit both settings) there are more threads than cores, and spinning threads burn the time the
# working ones need. Measured (benchmarks/records/omp_wait_2026-12-06/ and suite_time_2026-12-06b/):
# tests/test_demo_model.py twice side by side took 92 s each with OpenMP's default waiting, 37-39 s with PASSIVE;
# alone, 32 s and 30 s. The full suite: one process 17 min 8 s; two workers 14-17 min with the default waiting,
# 10 min 22 s with PASSIVE.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)


#: the modules that take longest (full-suite durations, benchmarks/records/suite_time_*): under pytest-xdist's
#: --dist loadfile each module runs whole on one worker, in collection order, so these go first and the run does not
#: end with one worker busy on a long module while the other waits
LONG_MODULES = ("test_server.py", "test_distributed.py", "test_pose.py", "test_training_page.py", "test_export.py",
                "test_lesion_recipe.py", "test_training.py", "test_benchmark.py", "test_server_security.py",
                "test_slabs.py", "test_demo_model.py", "test_training_lifecycle.py")


def pytest_collection_modifyitems(config, items):
    if _WORKERS > 1:  # a stable sort: the tests of a module keep their order
        rank = {name: i for i, name in enumerate(LONG_MODULES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONG_MODULES)))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: longer tests (still run in CI)")
    config.addinivalue_line("markers", "server: starts a real MONAI Label server on loopback")


@pytest.fixture(scope="session")
def sample_cases():
    from jmmda_model.data import find_cases

    cases = find_cases(SAMPLE)
    assert len(cases) >= 8
    return cases


@pytest.fixture()
def small_store(tmp_path):
    """A writable datastore with the first 3 sample cases."""
    from server_utils import copy_studies

    return copy_studies(tmp_path / "store", n=3)


@pytest.fixture(scope="session")
def tiny_gcfg():
    from jmmda_model.networks import GeneratorConfig

    return GeneratorConfig(base_channels=8, depth=2, heads=2)


def read(path):
    return sitk.ReadImage(str(path))


def arr(img):
    return sitk.GetArrayFromImage(img)


def make_image(a, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(np.asarray(a))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def slicer_scene():
    """An MRML scene (slicer-core) with a layout node and the Red/Yellow/Green slice and composite nodes."""
    import slicer

    scene = slicer.vtkMRMLScene()
    scene.AddNode(slicer.vtkMRMLLayoutNode())
    for name in ("Red", "Yellow", "Green"):
        sn = slicer.vtkMRMLSliceNode()
        sn.SetLayoutName(name)
        scene.AddNode(sn)
        cn = slicer.vtkMRMLSliceCompositeNode()
        cn.SetLayoutName(name)
        scene.AddNode(cn)
    return scene
