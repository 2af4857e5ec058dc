"""Slicer module for the reading room: the state machine behind the widgets, cancel and cleanup paths,
transforms, segment choice, display presets/overlay/crosshair, banner that follows the volume, difference
view, parameter node across scene save/load, and the extension's CMake configuration (issue 13)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from conftest import ROOT, SAMPLE, slicer_scene

MODULE_DIR = ROOT / "slicer_extension" / "CT2DWI"
sys.path.insert(0, str(MODULE_DIR))

from CT2DWILib import CT2DWIClient, ServerError  # noqa: E402
from CT2DWILib.state import CANCELLING, DONE, ERROR, IDLE, RUNNING, Cancelled, JobRunner, TempFolder, cancellable  # noqa: E402


def _drain(runner, timeout=10.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = runner.poll()
        if not v.busy:
            return v
        time.sleep(0.01)
    raise TimeoutError(runner.status)


# ---------------------------------------------------------------- state machine (what the widgets show)
def test_idle_running_done_and_files_removed():
    r = JobRunner()
    v = r.view(has_ct=False)
    assert v.phase == IDLE and not v.run_enabled and not v.cancel_enabled  # no CT selected
    assert r.view(has_ct=True).run_enabled
    files = TempFolder()
    (files.path / "ct.nrrd").write_bytes(b"patient data")
    gate = threading.Event()
    r.start("Synthesizing DWI", lambda cancel: gate.wait(5) and 42, lambda res: f"Done: {res}", files)
    v = r.poll()
    assert v.phase == RUNNING and v.busy and v.cancel_enabled and not v.run_enabled and not v.connect_enabled
    assert v.status.startswith("Synthesizing DWI...")
    with pytest.raises(RuntimeError, match="still running"):
        r.start("again", lambda c: 1, lambda x: "")
    gate.set()
    v = _drain(r)
    assert v.phase == DONE and v.status == "Done: 42" and v.run_enabled and not v.error
    assert not files.exists


def test_server_error_and_failing_result_callback_end_in_error_not_stuck():
    r = JobRunner()
    files = TempFolder()

    def boom(cancel):
        raise ServerError("the input was rejected (HTTP 422): CT: not a head", 422)

    r.start("Synthesizing DWI", boom, lambda res: "never", files)
    v = _drain(r)
    assert v.phase == ERROR and v.error and "HTTP 422" in v.status and not files.exists and v.run_enabled

    def bad_callback(res):
        raise ValueError("the synthetic DWI returned by the server is not on the CT grid")

    r.start("Synthesizing DWI", lambda c: 1, bad_callback, TempFolder())
    v = _drain(r)
    assert v.phase == ERROR and "not on the CT grid" in v.status and "Synthesizing" in v.status


def test_cancel_returns_at_once_and_discards_the_late_result():
    r = JobRunner()
    files = TempFolder()
    release = threading.Event()
    shown = []

    def slow_request():
        release.wait(10)
        return "late result"

    r.start("Synthesizing DWI", lambda cancel: cancellable(slow_request, cancel), shown.append, files)
    assert r.poll().phase == RUNNING
    t0 = time.time()
    r.cancel()
    assert r.poll().phase == CANCELLING and not r.view().cancel_enabled
    v = _drain(r, timeout=3)
    assert time.time() - t0 < 1.5 and v.phase == IDLE and v.status.endswith("cancelled") and not v.error
    release.set()
    time.sleep(0.2)
    assert shown == [] and not files.exists and r.poll().phase == IDLE


def test_reset_on_scene_close_abandons_the_job():
    r = JobRunner()
    files = TempFolder()
    gate = threading.Event()
    shown = []
    r.start("Synthesizing DWI", lambda cancel: cancellable(lambda: gate.wait(10), cancel), shown.append, files)
    r.reset("Scene closed: synthesis abandoned")
    assert r.view().phase == IDLE and r.view().run_enabled and not files.exists
    gate.set()
    time.sleep(0.2)
    assert r.poll().status == "Scene closed: synthesis abandoned" and shown == []
    r.fail("select a CT volume")
    assert r.view().error and r.view().phase == ERROR


class _SlowInfer(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _SlowInfer.release.wait(20)
        self.send_response(503)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_client_infer_cancels_a_request_the_server_is_still_computing(tmp_path):
    srv = HTTPServer(("127.0.0.1", 0), _SlowInfer)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ct = tmp_path / "ct.nii.gz"
        ct.write_bytes(b"x" * 1000)
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        t0 = time.time()
        with pytest.raises(Cancelled):
            CT2DWIClient(f"http://127.0.0.1:{srv.server_port}").infer(ct, out_dir=tmp_path, cancel=cancel)
        assert time.time() - t0 < 3
    finally:
        _SlowInfer.release.set()
        srv.shutdown()


# ---------------------------------------------------------------- MRML level (slicer-core)
slicer = pytest.importorskip("slicer")
from CT2DWILib import mrml  # noqa: E402


def _scene():
    return slicer_scene()


def _result_file(tmp_path, ct_node, scene):
    """A stand-in server result: a float volume on the CT's local grid."""
    p = mrml.write_volume(scene, ct_node, tmp_path / "SYNTHETIC_DWI.nii.gz")
    import SimpleITK as sitk

    img = sitk.Cast(sitk.ReadImage(str(p)), sitk.sitkFloat32) * 0.001 + 0.5
    sitk.WriteImage(img, str(p))
    return p


def test_result_is_placed_under_the_cts_parent_transform(tmp_path):
    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_007.nii.gz", "CT")
    tf = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "head pose")
    import vtk

    mat = vtk.vtkMatrix4x4()
    mat.SetElement(0, 3, 25.0)
    mat.SetElement(1, 3, -12.0)
    tf.SetMatrixTransformToParent(mat)
    ct.SetAndObserveTransformNodeID(tf.GetID())
    node = mrml.load_synthetic(scene, _result_file(tmp_path, ct, scene), ct)
    assert node.GetTransformNodeID() == tf.GetID()  # aligned with the CT in every view
    b_ct, b_syn = [0.0] * 6, [0.0] * 6
    ct.GetRASBounds(b_ct)
    node.GetRASBounds(b_syn)
    np.testing.assert_allclose(b_syn, b_ct, atol=1e-3)
    mask = mrml.read_volume(scene, SAMPLE / "labels" / "brainmask" / "phantom_007.nii.gz", "mask", labelmap=True)
    with pytest.raises(ValueError, match="different transforms"):
        mrml.check_transforms(ct, mask)
    mask.SetAndObserveTransformNodeID(tf.GetID())
    mrml.check_transforms(ct, mask)


def test_only_the_chosen_segment_becomes_the_mask_and_the_node_is_reused():
    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_003.nii.gz", "CT")
    brain = mrml.read_volume(scene, SAMPLE / "labels" / "brainmask" / "phantom_003.nii.gz", "brain", labelmap=True)
    lesion = mrml.read_volume(scene, SAMPLE / "labels" / "lesion" / "phantom_003.nii.gz", "lesion", labelmap=True)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Segmentation")
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.ImportLabelmapToSegmentationNode(brain, seg) and logic.ImportLabelmapToSegmentationNode(lesion, seg)
    segs = mrml.list_segments(seg)
    assert len(segs) == 2
    lesion_id = segs[1][0]
    n_nodes = scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode")
    label = mrml.segment_to_labelmap(scene, seg, lesion_id, ct)
    got = mrml.node_array(label) > 0
    assert got.sum() == (mrml.node_array(lesion) > 0).sum()  # the lesion segment only, not merged with the brain
    again = mrml.segment_to_labelmap(scene, seg, segs[0][0], ct)
    assert again is label and scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == n_nodes + 1
    assert (mrml.node_array(again) > 0).sum() == (mrml.node_array(brain) > 0).sum()
    with pytest.raises(ValueError, match="not in"):
        mrml.segment_to_labelmap(scene, seg, "nope", ct)
    assert mrml.remove_temporary_nodes(scene) == 1 and scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == n_nodes


def test_presets_overlay_crosshair_outline_and_banner_views(tmp_path):
    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_005.nii.gz", "CT")
    mask = mrml.read_volume(scene, SAMPLE / "labels" / "brainmask" / "phantom_005.nii.gz", "mask", labelmap=True)
    syn = mrml.load_synthetic(scene, _result_file(tmp_path, ct, scene), ct, mask)
    ct.CreateDefaultDisplayNodes()
    mrml.apply_window(ct, *mrml.CT_PRESETS["CT stroke (W40 L40)"])
    assert (ct.GetDisplayNode().GetWindow(), ct.GetDisplayNode().GetLevel()) == (40.0, 40.0)
    presets = mrml.dwi_presets(mrml.node_array(syn), mrml.node_array(mask))
    (w1, _), (w2, l2) = presets.values()
    assert 0 < w2 and l2 > 0 and w1 > 0
    mrml.configure_side_by_side(scene, ct, syn, mask)
    assert mrml.views_showing_synthetic(scene) == ["Yellow"]
    mrml.set_outline(scene, None)  # the checkbox, after the result is shown
    comps = {scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName(): scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
             for i in range(3)}
    assert comps["Yellow"].GetLabelVolumeID() is None
    mrml.set_outline(scene, mask)
    assert comps["Red"].GetLabelVolumeID() == mask.GetID()
    mrml.configure_overlay(scene, ct, syn, opacity=0.35)
    assert comps["Red"].GetForegroundVolumeID() == syn.GetID() and comps["Red"].GetForegroundOpacity() == pytest.approx(0.35)
    assert set(mrml.views_showing_synthetic(scene)) == {"Red", "Yellow"}  # the banner follows the volume
    mrml.link_crosshair(scene)
    ch = scene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
    assert ch.GetCrosshairMode() == slicer.vtkMRMLCrosshairNode.ShowBasic
    assert ch.GetCrosshairBehavior() == slicer.vtkMRMLCrosshairNode.OffsetJumpSlice


def test_difference_view_against_a_real_dwi(tmp_path):
    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_005.nii.gz", "CT")
    mask = mrml.read_volume(scene, SAMPLE / "labels" / "brainmask" / "phantom_005.nii.gz", "mask", labelmap=True)
    real = mrml.read_volume(scene, SAMPLE / "labels" / "dwi" / "phantom_005.nii.gz", "DWI")
    syn = mrml.load_synthetic(scene, _result_file(tmp_path, ct, scene), ct, mask)
    diff = mrml.difference_volume(scene, syn, real, mask)
    d = mrml.node_array(diff)
    assert d.shape == mrml.node_array(syn).shape and d.min() >= 0 and d[mrml.node_array(mask) == 0].max() == 0
    assert "DIFFERENCE" in diff.GetName() and diff.GetAttribute("CT2DWI.Synthetic") == "true"


def test_parameter_node_survives_scene_save_and_load(tmp_path):
    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_005.nii.gz", "CT")
    param = mrml.parameter_node(scene)
    assert mrml.parameter_node(scene) is param
    mrml.remember(param, "InputCT", ct, Segment="Segment_1", OverlayOpacity=0.4, Preset="CT stroke (W40 L40)")
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    other = slicer.vtkMRMLScene()
    other.SetURL(str(tmp_path / "scene.mrml"))
    assert other.Import()
    p2 = mrml.parameter_node(other)
    assert p2.GetParameter("Segment") == "Segment_1" and p2.GetParameter("OverlayOpacity") == "0.4"
    assert p2.GetNodeReference("InputCT").GetName() == "CT"
    with pytest.raises(ValueError):
        mrml.remember(param, "Bogus", ct)


def test_dicom_export_tags_mark_the_series_synthetic():
    tags = mrml.dicom_export_tags("CT head", "v3")
    assert "SYNTHETIC" in tags["SeriesDescription"] and tags["ImageType"].endswith("SYNTHETIC") and "v3" in tags["DerivationDescription"]


# ---------------------------------------------------------------- packaging
STUB = """
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/GenerateConfig.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/CPack.cmake)
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(f ${MY_SCRIPTS} ${MY_RESOURCES})
    if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${f})
      message(FATAL_ERROR "listed file missing: ${f}")
    endif()
    file(APPEND ${CMAKE_BINARY_DIR}/listed.txt "${f}\\n")
  endforeach()
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""
GENERATE = """
foreach(v EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION EXTENSION_ICONURL)
  if("${${v}}" STREQUAL "")
    message(FATAL_ERROR "${v} is empty")
  endif()
  file(APPEND ${CMAKE_BINARY_DIR}/metadata.txt "${v}=${${v}}\\n")
endforeach()
"""


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_extension_configures_with_cmake_against_a_stub_slicer(tmp_path):
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(STUB)
    (stub / "UseSlicer.cmake").write_text("")
    (stub / "GenerateConfig.cmake").write_text(GENERATE)
    (stub / "CPack.cmake").write_text("")
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(ROOT / "slicer_extension"), "-B", str(build), f"-DSlicer_DIR={stub}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    listed = set((build / "listed.txt").read_text().split())
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert listed == on_disk  # every file ships, nothing listed is missing
    meta = dict(line.split("=", 1) for line in (build / "metadata.txt").read_text().splitlines())
    assert meta["EXTENSION_CATEGORY"] and "SYNTHETIC" in meta["EXTENSION_DESCRIPTION"]
    assert (ROOT / "LICENSE").exists() and "Apache" in (ROOT / "LICENSE").read_text()


def test_probability_overlay_colour_bar_threshold_and_suspected_infarct_segment(tmp_path):
    """Probability-map issue, Slicer part (MRML level): the map over the CT and the synthetic DWI with the hot
    colour table and a colour bar, voxels below the slider's threshold hidden, a 'suspected infarct' segment with its
    volume in mL that follows the threshold, and the SYNTHETIC banner on every view that shows the map."""
    import SimpleITK as sitk

    scene = _scene()
    ct = mrml.read_volume(scene, SAMPLE / "phantom_001.nii.gz", "CT")
    ref = sitk.ReadImage(str(SAMPLE / "phantom_001.nii.gz"))
    lesion = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE / "labels" / "lesion" / "phantom_001.nii.gz"))) > 0
    prob = np.where(lesion, 0.9, 0.1).astype(np.float32)
    prob[:2] = 0.6  # two slices of middling probability
    img = sitk.GetImageFromArray(prob)
    img.CopyInformation(ref)
    path = tmp_path / "SYNTHETIC_INFARCT_PROBABILITY.nii.gz"
    sitk.WriteImage(img, str(path))
    node = mrml.load_probability(scene, path, ct, {"probability": {"temperature": 0.79}}, threshold=0.5)
    assert node.GetAttribute(mrml.SYNTHETIC_ATTRIBUTE) == "true"
    disp = node.GetDisplayNode()
    assert disp.GetColorNode().GetName() == mrml.PROBABILITY_COLOR_NAME and disp.GetApplyThreshold()
    assert disp.GetLowerThreshold() == pytest.approx(0.5)
    syn = mrml.load_synthetic(scene, _result_file(tmp_path, ct, scene), ct)
    mrml.show_probability_overlay(scene, node, {"Red": ct, "Yellow": syn}, opacity=0.6)
    assert set(mrml.views_showing_synthetic(scene)) >= {"Red", "Yellow"}  # the banner covers the overlay too
    legend = mrml.probability_color_bar(scene, node)
    assert legend.GetPrimaryDisplayNode() is disp and "SYNTHETIC" in legend.GetTitleText()
    assert mrml.probability_color_bar(scene, node) is legend  # made once
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    seg, ml = mrml.suspected_infarct_segment(scene, node, 0.5)
    assert ml == pytest.approx(float(((prob >= 0.5)).sum()) * voxel_ml, rel=1e-6)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert "SYNTHETIC" in seg.GetSegmentation().GetNthSegment(0).GetName()
    seg2, ml2 = mrml.suspected_infarct_segment(scene, node, 0.8, reuse=seg)  # the slider moved: same node, fewer mL
    mrml.set_probability_threshold(node, 0.8)
    assert seg2 is seg and ml2 == pytest.approx(float(lesion.sum()) * voxel_ml, rel=1e-6) and ml2 < ml
    assert disp.GetLowerThreshold() == pytest.approx(0.8)
    assert scene.GetFirstNodeByName("ct2dwi_suspected_infarct_tmp") is None  # no helper node left behind
