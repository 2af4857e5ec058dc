"""CT2DWI: send a head CT (+ brain mask) to a JMMDA-GAN MONAI Label server and show the
SYNTHETIC DWI beside the CT. Research use only - synthetic images are not for diagnosis.

Slicer/Qt glue only; the HTTP client, numpy and MRML logic live in CT2DWILib (tested with pytest).
"""
import os
import tempfile

import ctk  # noqa: F401
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CT2DWILib import BANNER, BackgroundCall, CT2DWIClient, ServerError
from CT2DWILib.client import default_server_url
from CT2DWILib.logic import training_summary, version_label
from CT2DWILib.mrml import configure_side_by_side, load_synthetic, write_volume

SETTINGS_KEY = "CT2DWI/ServerURL"


class CT2DWI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CT to DWI (JMMDA-GAN)"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["JMMDA-GAN team"]
        self.parent.helpText = (
            "Synthesizes a diffusion-weighted MRI from a head CT and a brain mask on a JMMDA-GAN "
            "MONAI Label server. <b>The result is SYNTHETIC and not for diagnosis.</b>"
        )
        self.parent.acknowledgementText = "JMMDA-GAN: Joint Mask and Multi-Frequency Dual Attention GAN (doi 10.11999/JEIT250643)."


class CT2DWIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    POLL_MS = 200

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._job = None
        self._job_done = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        self._train_timer = qt.QTimer()
        self._train_timer.setInterval(3000)
        self._train_timer.connect("timeout()", self.onTrainStatus)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/CT2DWI.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = CT2DWILogic()

        self.ui.serverUrlLineEdit.text = qt.QSettings().value(SETTINGS_KEY, default_server_url())
        self.ui.ctSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.ui.maskSelector.nodeTypes = ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"]
        self.ui.maskSelector.noneDisplay = "(server computes a brain mask)"
        self.ui.bannerLabel.text = BANNER

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.trainStartButton.connect("clicked(bool)", self.onTrainStart)
        self.ui.trainStatusButton.connect("clicked(bool)", self.onTrainStatus)
        self.ui.trainStopButton.connect("clicked(bool)", self.onTrainStop)
        self.ui.versionsRefreshButton.connect("clicked(bool)", self.onVersionsRefresh)
        self.ui.versionsPromoteButton.connect("clicked(bool)", self.onVersionPromote)
        self.ui.ctSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._updateButtons)
        self.ui.showOutlineCheckBox.connect("toggled(bool)", self._updateButtons)
        self._updateButtons()

    def cleanup(self):
        self._timer.stop()
        self._train_timer.stop()
        self.removeObservers()

    # ------------------------------------------------------------------ helpers
    def _client(self):
        url = self.ui.serverUrlLineEdit.text.strip()
        qt.QSettings().setValue(SETTINGS_KEY, url)
        return CT2DWIClient(url, token=self.ui.tokenLineEdit.text.strip() or None)

    def _status(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b; font-weight: bold;" if error else "")
        if error:
            slicer.util.errorDisplay(text, windowTitle="CT to DWI")

    def _updateButtons(self, *_):
        busy = self._job is not None
        self.ui.runButton.enabled = self.ui.ctSelector.currentNode() is not None and not busy
        self.ui.connectButton.enabled = not busy

    def _start(self, what, fn, on_done, *args):
        """Runs fn(*args) in a worker thread; on_done(result) is called in the GUI thread."""
        self._job = BackgroundCall(fn, *args)
        self._job_done = on_done
        self._job_what = what
        self.ui.progressBar.setRange(0, 0)  # busy indicator
        self.ui.progressBar.visible = True
        self._status(f"{what}...")
        self._updateButtons()
        self._timer.start()

    def _poll(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        if not job.done:
            self.ui.statusLabel.text = f"{self._job_what}... {job.elapsed:.0f} s"
            return
        self._timer.stop()
        self._job = None
        self.ui.progressBar.visible = False
        self._updateButtons()
        try:
            result = job.result()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never swallowed
            self._status(f"{self._job_what} failed: {exc}", error=True)
            return
        self._job_done(result)

    # ------------------------------------------------------------------ actions
    def onConnect(self):
        try:
            client = self._client()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        self._start("Contacting server", client.model_ready, self._onConnected)

    def _onConnected(self, result):
        ready, detail = result
        if ready:
            self._status(f"Connected - model ready ({detail})")
        else:
            self._status(f"Connected, but {detail}", error=True)

    def onRun(self):
        ct = self.ui.ctSelector.currentNode()
        mask = self.ui.maskSelector.currentNode()
        try:
            client = self._client()
            ct_path, mask_path, mask_label = self.logic.exportInputs(ct, mask)
        except (ServerError, IOError, ValueError) as exc:
            self._status(str(exc), error=True)
            return
        self._inputs = (ct, mask_label, self.ui.outlineSelector.currentNode() or mask_label)
        self._start("Synthesizing DWI", client.infer, self._onSynthesized, ct_path, mask_path)

    def _onSynthesized(self, result):
        path, info = result
        ct, mask_label, outline = self._inputs
        try:
            node = self.logic.showResult(path, ct, mask_label, info, outline if self.ui.showOutlineCheckBox.checked else None)
        except (IOError, ValueError) as exc:
            self._status(str(exc), error=True)
            return
        self.logic.addBanner(BANNER)
        self._status(f"Done: '{node.GetName()}' ({info.get('mask_source', '')} mask, {info.get('device', '')})")

    def onTrainStart(self):
        params = {"epochs": int(self.ui.epochsSpinBox.value)}
        try:
            client = self._client()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        self._start("Starting training", lambda: client.train_start(**params), self._onTrainStarted)

    def _onTrainStarted(self, result):
        self._status(f"Training {result.get('status', 'submitted').lower()} on the server")
        self._train_timer.start()

    def onTrainStatus(self):
        try:
            status = self._client().train_status()
        except ServerError as exc:
            self._train_timer.stop()
            self._status(str(exc), error=True)
            return
        self.ui.trainStatusLabel.text = training_summary(status)
        if status.get("status") not in ("RUNNING", "SUBMITTED"):
            self._train_timer.stop()

    def onTrainStop(self):
        try:
            res = self._client().train_stop()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        self._train_timer.stop()
        self.ui.trainStatusLabel.text = training_summary(res)


    def onVersionsRefresh(self):
        try:
            client = self._client()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        self._start("Reading model versions", client.versions, self._onVersions)

    def _onVersions(self, versions):
        self.ui.versionsComboBox.clear()
        for v in versions:
            self.ui.versionsComboBox.addItem(version_label(v), v["id"])
            if v.get("served"):
                self.ui.versionsComboBox.setCurrentIndex(self.ui.versionsComboBox.count - 1)
        self._status(f"{len(versions)} model version(s) on the server")

    def onVersionPromote(self):
        vid = self.ui.versionsComboBox.currentData
        if vid is None:
            self._status("Refresh the version list first", error=True)
            return
        try:
            client = self._client()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return
        self._start(f"Serving model version {vid}", lambda: client.promote(vid), lambda _r: self.onVersionsRefresh())


class CT2DWILogic(ScriptedLoadableModuleLogic):
    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.tmpdir = tempfile.mkdtemp(prefix="CT2DWI_")

    def exportInputs(self, ct, mask):
        """Writes the CT and the mask (labelmap, or segmentation exported to a labelmap on the CT
        grid) to files for upload. Returns (ct_path, mask_path or None, labelmap node or None)."""
        if ct is None:
            raise ValueError("select a CT volume")
        ct_path = write_volume(slicer.mrmlScene, ct, os.path.join(self.tmpdir, "ct.nrrd"))
        if mask is None:
            return str(ct_path), None, None
        label = mask
        if mask.IsA("vtkMRMLSegmentationNode"):
            label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", mask.GetName() + " brain mask")
            ok = slicer.modules.segmentations.logic().ExportVisibleSegmentsToLabelmapNode(mask, label, ct)
            if not ok:
                slicer.mrmlScene.RemoveNode(label)
                raise ValueError(f"could not convert segmentation '{mask.GetName()}' to a labelmap on the CT grid")
        mask_path = write_volume(slicer.mrmlScene, label, os.path.join(self.tmpdir, "mask.nrrd"))
        return str(ct_path), str(mask_path), label

    def showResult(self, path, ct, mask_label, info, outline=None):
        """Loads the result (W/L from brain percentiles) and shows CT | synthetic DWI, with
        ``outline`` (brain or lesion labelmap) drawn as an outline on both views when given."""
        node = load_synthetic(slicer.mrmlScene, path, ct, mask_label, info)
        configure_side_by_side(slicer.mrmlScene, ct, node, outline)
        slicer.util.resetSliceViews()
        return node

    def addBanner(self, text):
        """On-screen banner in the synthetic (Yellow) view and a note in the CT view."""
        lm = slicer.app.layoutManager()
        for view, msg in (("Yellow", text), ("Red", "CT (source)")):
            widget = lm.sliceWidget(view)
            if widget is None:
                continue
            ca = widget.sliceView().cornerAnnotation()
            ca.SetText(vtk.vtkCornerAnnotation.UpperEdge, msg)
            if view == "Yellow":
                ca.GetTextProperty().SetColor(1.0, 0.25, 0.2)
            widget.sliceView().forceRender()


class CT2DWITest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (ctest) against a server at CT2DWI_SERVER with a sample CT file at
    CT2DWI_TEST_CT (e.g. sample_data/studies/phantom_007.nii.gz)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_round_trip()

    def test_round_trip(self):
        ct_file = os.environ.get("CT2DWI_TEST_CT")
        if not ct_file:
            self.delayDisplay("CT2DWI_TEST_CT not set; skipping server round trip")
            return
        ct = slicer.util.loadVolume(ct_file)
        logic = CT2DWILogic()
        ct_path, _, _ = logic.exportInputs(ct, None)
        path, info = CT2DWIClient(default_server_url()).infer(ct_path)
        node = logic.showResult(path, ct, None, info)
        self.assertIn("SYNTHETIC", node.GetName())
        self.assertEqual(node.GetAttribute("CT2DWI.Synthetic"), "true")
        self.delayDisplay("CT2DWI round trip passed")
