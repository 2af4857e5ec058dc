"""CT2DWI Slicer module: pure-python client + numpy logic against the real server, MRML-level code
with the Qt-free slicer-core build, and consistency of the module's Slicer/Qt glue with its .ui."""
import ast
import re
import sys
import threading
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, SAMPLE, slicer_scene
from server_utils import free_port, sample_server

MODULE_DIR = ROOT / "slicer_extension" / "CT2DWI"
sys.path.insert(0, str(MODULE_DIR))

from CT2DWILib import BANNER, BackgroundCall, CT2DWIClient, ServerError, synthetic_name, window_level_from_brain  # noqa: E402
from CT2DWILib.logic import operating_threshold, reading_cautions, suspected_infarct_text, training_summary  # noqa: E402

slicer = pytest.importorskip("slicer")  # slicer-core (Qt-free MRML)
from CT2DWILib import mrml  # noqa: E402


# ------------------------------------------------------------------ pure logic
def test_window_level_from_brain_percentiles():
    rng = np.random.default_rng(0)
    img = np.zeros((4, 20, 20))
    brain = np.zeros_like(img, np.uint8)
    brain[:, 5:15, 5:15] = 1
    img[brain > 0] = rng.uniform(0.2, 0.8, brain.sum())
    img[0, 0, 0] = 50.0  # outlier outside the brain must not stretch the window
    w, l = window_level_from_brain(img, brain)
    assert 0.5 < w < 0.6 and abs(l - 0.5) < 0.02
    with pytest.raises(ValueError, match="shape"):
        window_level_from_brain(img, brain[:2])


def test_names_banner_and_training_text():
    assert "SYNTHETIC" in synthetic_name("CT head") and "CT head" in synthetic_name("CT head")
    assert "not for diagnosis" in BANNER
    assert "no training" in training_summary({"status": "NONE"})
    s = training_summary({"status": "RUNNING", "details": ["x", "epoch 2/5 {\"loss\": 1}"]})
    assert s == "training running - epoch 2/5"


def test_reading_cautions_name_what_limits_this_image():
    """The reader is told, from the server's answer, what limits this particular synthetic DWI."""
    plain = reading_cautions({"mask_source": "supplied", "hemispheric_comparison": "used",
                              "midplane": {"trusted": True}})
    assert plain == ["A normal-looking synthetic DWI never rules out an infarct; a bright area is not proof of one."]
    assert reading_cautions(None) == plain
    worst = reading_cautions({
        "mask_source": "automatic (CT)",
        "midplane": {"trusted": False, "reason": "large asymmetric defect"},
        "hemispheric_comparison": "NOT used (mid-sagittal plane not trusted: large asymmetric defect)",
        "slice_tilt": "the slices are angled 15.0 degrees to the patient's axial plane (gantry tilt or oblique series)",
        "series_notes": ["gantry tilt 15.0 degrees corrected", "localizer left out"],
        "slabs": "the CT's 320 slices of 0.50 mm were averaged into 32 slabs of 5.00 mm placed in the patient's frame",
        "model_card": {"pose": "gantry tilt 15 deg over 6 phantoms: r 0.833 with the untilted synthesis"},
    })
    text = "\n".join(worst)
    assert len(worst) == 7 and worst[0] == plain[0]
    assert "Hemispheric comparison OFF" in text and "large asymmetric defect" in text and "less likely to show" in text
    assert "angled 15.0 degrees" in text and "r 0.833" in text
    assert "Series reader: localizer left out." in text and "made automatically" in text
    assert "Thin slices: the CT's 320 slices of 0.50 mm were averaged into 32 slabs of 5.00 mm placed in the patient's frame." in text
    assert ".." not in text


def test_the_threshold_slider_starts_at_the_models_operating_point():
    """The served model's operating point (info["probability"]["operating_threshold"]) is where the slider starts;
    without one, or with a value that is not a probability, the slider is left where it is (None)."""
    assert operating_threshold({"probability": {"temperature": 1.6, "operating_threshold": 0.75}}) == 0.75
    for info in (None, {}, {"probability": None}, {"probability": {"temperature": 1.6}},
                 {"probability": {"operating_threshold": None}}, {"probability": {"operating_threshold": "0.7"}},
                 {"probability": {"operating_threshold": True}}, {"probability": {"operating_threshold": 1.2}},
                 {"probability": {"operating_threshold": -0.1}}):
        assert operating_threshold(info) is None, info
    at_point = suspected_infarct_text(0.75, 12.34, 0.75)
    assert "p >= 0.75" in at_point and "operating point" in at_point and "12.3 mL" in at_point
    assert "never rules out" in at_point and "SYNTHETIC" in at_point
    assert "operating point" not in suspected_infarct_text(0.5, 1.0, 0.75)
    assert "operating point" not in suspected_infarct_text(0.5, 1.0, None)


def test_background_call_does_not_block_and_reports_errors():
    release = threading.Event()
    job = BackgroundCall(lambda: release.wait(10) and 42)
    assert not job.done
    with pytest.raises(RuntimeError, match="still running"):
        job.result()
    release.set()
    assert job.wait(5) and job.result() == 42

    def fail():
        raise ServerError("boom", 422)

    bad = BackgroundCall(fail)
    bad.wait(5)
    with pytest.raises(ServerError, match="boom"):
        bad.result()


def test_client_errors_are_clear():
    with pytest.raises(ServerError, match="invalid server URL"):
        CT2DWIClient("localhost:8000")
    with pytest.raises(ServerError, match="cannot reach"):
        CT2DWIClient(f"http://127.0.0.1:{free_port()}").info()


# ------------------------------------------------------------------ module files
def test_module_glue_matches_ui_and_cmake():
    src = (MODULE_DIR / "CT2DWI.py").read_text()
    tree = ast.parse(src)
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"CT2DWI", "CT2DWIWidget", "CT2DWILogic", "CT2DWITest"} <= classes
    ui = ET.parse(MODULE_DIR / "Resources" / "UI" / "CT2DWI.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", src))
    assert used and used <= names, used - names
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = [line.strip().replace("${MODULE_NAME}", "CT2DWI") for line in cmake.splitlines()
              if line.strip().startswith(("${MODULE_NAME}", "Resources/"))]
    assert listed and all((MODULE_DIR / p).exists() for p in listed), listed
    top = (ROOT / "slicer_extension" / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "add_subdirectory(CT2DWI)"):
        assert key in top


# ------------------------------------------------------------------ against the real server
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = sample_server(tmp_path_factory.mktemp("slicer_srv"), n=3).wait()
    yield s
    s.stop()


def _scene_with_views():
    return slicer_scene()


def test_mrml_round_trip_through_server(server, tmp_path):
    scene = _scene_with_views()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_007.nii.gz", "CT head")
    mask = mrml.read_volume(scene, SAMPLE / "labels" / "brainmask" / "phantom_007.nii.gz", "brain", labelmap=True)
    ct_path = mrml.write_volume(scene, ct, tmp_path / "ct.nrrd")
    mask_path = mrml.write_volume(scene, mask, tmp_path / "mask.nrrd")

    client = CT2DWIClient(server.url)
    assert client.model_ready()[0]
    out, info = client.infer(ct_path, mask_path, out_dir=tmp_path)
    assert info["synthetic"] is True and "SYNTHETIC" in out.name

    node = mrml.load_synthetic(scene, out, ct, mask, info)
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert "SYNTHETIC" in node.GetName() and node.GetAttribute("CT2DWI.Synthetic") == "true"
    assert "not for diagnosis" in node.GetDescription()
    assert node.GetAttribute("CT2DWI.Cautions").split(" | ") == reading_cautions(info)  # kept with the volume
    assert "never rules out an infarct" in node.GetDescription()
    assert mrml.same_geometry(node, ct)
    arr = mrml.node_array(node)
    assert arr.dtype == np.float32
    brain = mrml.node_array(mask) > 0
    lo, hi = np.percentile(arr[brain], [1, 99])
    disp = node.GetDisplayNode()
    assert disp.GetAutoWindowLevel() == 0
    assert disp.GetWindow() == pytest.approx(hi - lo, rel=1e-3) and disp.GetLevel() == pytest.approx((hi + lo) / 2, rel=1e-3)

    mrml.configure_side_by_side(scene, ct, node, mask)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    comps = {scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName(): scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
             for i in range(3)}
    assert comps["Red"].GetBackgroundVolumeID() == ct.GetID()
    assert comps["Yellow"].GetBackgroundVolumeID() == node.GetID()
    assert comps["Red"].GetLinkedControl() and comps["Yellow"].GetLinkedControl()
    assert comps["Yellow"].GetLabelVolumeID() == mask.GetID()


def test_result_off_the_ct_grid_is_discarded(server, tmp_path):
    scene = _scene_with_views()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_007.nii.gz", "CT")
    other = sitk.ReadImage(str(SAMPLE / "phantom_006.nii.gz"))
    other.SetOrigin((0.0, 0.0, 0.0))
    p = tmp_path / "SYNTHETIC_wrong.nii.gz"
    sitk.WriteImage(sitk.Cast(other, sitk.sitkFloat32), str(p))
    n_before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(ValueError, match="not on the CT grid"):
        mrml.load_synthetic(scene, p, ct)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_before


def test_server_errors_reach_the_user(server, tmp_path):
    client = CT2DWIClient(server.url)
    with pytest.raises(ServerError) as e:
        client.infer(SAMPLE / "labels" / "dwi" / "phantom_007.nii.gz")  # an MR image sent as CT
    assert e.value.status == 422 and "Hounsfield" in str(e.value) and "rejected" in str(e.value)


def test_training_start_monitor_stop(server):
    client = CT2DWIClient(server.url)
    assert client.train_start(epochs=50, batch_size=2)["status"] in ("SUBMITTED", "RUNNING")
    t0 = time.time()
    while client.train_status().get("status") != "RUNNING" and time.time() - t0 < 60:
        time.sleep(0.5)
    assert "training running" in training_summary(client.train_status())
    assert client.train_stop()["status"] == "STOPPED"
    assert training_summary(client.train_status()).startswith("training stopped")


def test_version_list_and_promote_from_the_module_client(server):
    """The Slicer training panel shows the same version list as the training page and can serve one."""
    from CT2DWILib.logic import version_label

    client = CT2DWIClient(server.url)
    versions = client.versions()
    assert versions[0]["id"] == 0 and any(v["served"] for v in versions)
    labels = [version_label(v) for v in versions]
    assert labels[0].startswith("v0 (demo)") and sum("[serving]" in x for x in labels) == 1
    assert client.promote(0)["version"] == 0
    with pytest.raises(ServerError) as e:
        client.promote(99)
    assert e.value.status == 404
    assert version_label({"id": 3, "published": "2026-01-02T03:04:05", "validation": {"psnr_brain": 25.04, "lesion_sensitivity": 0.5},
                          "served": True}) == "v3 \u2013 2026-01-02 03:04:05 \u2013 PSNR 25.0 dB \u2013 lesions 50% \u2013 [serving]"
    from CT2DWILib.logic import promotion_warning

    cand = {"id": 4, "candidate": True, "comparison": {"worse_on_lesions": ["shows fewer lesions (0.20 vs 0.50)"]}}
    assert version_label(cand).endswith("[candidate: WORSE on lesions]")
    assert promotion_warning(cand) == "Worse on lesions than the served version: shows fewer lesions (0.20 vs 0.50)"
    assert promotion_warning({**cand, "comparison": {"worse_on_lesions": []}}) == "" and promotion_warning({"id": 0}) == ""
