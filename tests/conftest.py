import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "studies"
DEMO_MODEL = ROOT / "apps" / "ct2dwi" / "model" / "jmmda_demo.pt"

os.environ.setdefault("OMP_NUM_THREADS", "2")


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
