"""CT2DWI: send a head CT (+ brain mask) to a JMMDA-GAN MONAI Label server and show the SYNTHETIC DWI beside
(or over) the CT. Research use only - synthetic images are not for diagnosis.

Slicer/Qt glue only: every rule (which buttons are enabled, what the status says, cancel and cleanup paths)
lives in CT2DWILib.state.JobRunner, the HTTP client in CT2DWILib.client and the MRML work in CT2DWILib.mrml,
all tested with pytest (the MRML part with the Qt-free slicer-core). Every network call runs in a worker
thread; the GUI thread only polls.
"""
import os

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

from CT2DWILib import BANNER, CT2DWIClient, ServerError
from CT2DWILib import mrml
from CT2DWILib.client import default_server_url
from CT2DWILib.logic import (operating_threshold, promotion_warning, reading_cautions, suspected_infarct_text,
                             training_summary, version_label)
from CT2DWILib.state import JobRunner, TempFolder

SETTINGS_URL = "CT2DWI/ServerURL"
SETTINGS_TOKEN = "CT2DWI/Token"  # only when the user ticks "Remember token"


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
        self.runner = JobRunner()  # synthesis
        self.train_runner = JobRunner()  # training status / stop / versions (never blocks the GUI)
        self._versions: dict = {}  # id -> version record of the last list (for the promotion warning)
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self._poll)
        self._train_timer = qt.QTimer()
        self._train_timer.setInterval(3000)
        self._train_timer.connect("timeout()", self.onTrainStatus)
        self._inputs = None
        self._result = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/CT2DWI.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = CT2DWILogic()

        settings = qt.QSettings()
        self.ui.serverUrlLineEdit.text = settings.value(SETTINGS_URL, default_server_url())
        if settings.contains(SETTINGS_TOKEN):
            self.ui.tokenLineEdit.text = settings.value(SETTINGS_TOKEN)
            self.ui.rememberTokenCheckBox.checked = True
        self.ui.ctSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.ui.maskSelector.nodeTypes = ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"]
        self.ui.maskSelector.noneDisplay = "(server computes a brain mask)"
        self.ui.bannerLabel.text = BANNER
        for name in mrml.CT_PRESETS:
            self.ui.ctPresetComboBox.addItem(name)

        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.trainStartButton.connect("clicked(bool)", self.onTrainStart)
        self.ui.trainStatusButton.connect("clicked(bool)", self.onTrainStatus)
        self.ui.trainStopButton.connect("clicked(bool)", self.onTrainStop)
        self.ui.versionsRefreshButton.connect("clicked(bool)", self.onVersionsRefresh)
        self.ui.versionsPromoteButton.connect("clicked(bool)", self.onVersionPromote)
        self.ui.ctSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onInputsChanged)
        self.ui.maskSelector.connect("currentNodeChanged(vtkMRMLNode*)", self._onInputsChanged)
        self.ui.segmentComboBox.connect("currentIndexChanged(int)", self._onInputsChanged)
        self.ui.showOutlineCheckBox.connect("toggled(bool)", self.onOutlineToggled)
        self.ui.sideBySideRadio.connect("toggled(bool)", self.onLayoutChanged)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onLayoutChanged)
        self.ui.showProbabilityCheckBox.connect("toggled(bool)", self.onProbabilityChanged)
        self.ui.probabilityThresholdSlider.connect("valueChanged(double)", self.onProbabilityChanged)
        self.ui.ctPresetComboBox.connect("currentIndexChanged(int)", self.onCtPreset)
        self.ui.dwiPresetComboBox.connect("currentIndexChanged(int)", self.onDwiPreset)
        self.ui.crosshairCheckBox.connect("toggled(bool)", self.onCrosshair)
        self.ui.differenceButton.connect("clicked(bool)", self.onDifference)
        self.ui.saveDicomButton.connect("clicked(bool)", self.onSaveDicom)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneImported)
        self._restoreParameters()
        self._apply(self.runner.view(self.ui.ctSelector.currentNode() is not None))

    def cleanup(self):
        """Module left or Slicer closing: abandon running jobs, remove temporary files and nodes."""
        self.runner.reset("Module closed")
        self.train_runner.reset()
        self._timer.stop()
        self._train_timer.stop()
        self.removeObservers()
        if self.logic is not None:
            self.logic.cleanup()

    def onSceneStartClose(self, caller, event):
        self.runner.reset("Scene closed: synthesis abandoned")
        self._inputs = self._result = None
        self._apply(self.runner.view(False))

    def onSceneImported(self, caller, event):
        self._restoreParameters()

    # ------------------------------------------------------------------ parameter node (survives save/load)
    def _parameters(self):
        return mrml.parameter_node(slicer.mrmlScene)

    def _restoreParameters(self):
        p = self._parameters()
        for role, selector in (("InputCT", self.ui.ctSelector), ("InputMask", self.ui.maskSelector),
                               ("Outline", self.ui.outlineSelector), ("RealDWI", self.ui.realDwiSelector)):
            node = p.GetNodeReference(role)
            if node is not None:
                selector.setCurrentNode(node)
        if p.GetParameter("OverlayOpacity"):
            self.ui.opacitySlider.value = float(p.GetParameter("OverlayOpacity"))
        self._result = p.GetNodeReference("Result")

    def _saveParameters(self):
        p = self._parameters()
        mrml.remember(p, "InputCT", self.ui.ctSelector.currentNode())
        mrml.remember(p, "InputMask", self.ui.maskSelector.currentNode())
        mrml.remember(p, "Outline", self.ui.outlineSelector.currentNode())
        mrml.remember(p, "RealDWI", self.ui.realDwiSelector.currentNode())
        mrml.remember(p, "Result", self._result, Segment=self.ui.segmentComboBox.currentData or "",
                      OverlayOpacity=self.ui.opacitySlider.value)

    # ------------------------------------------------------------------ state -> widgets
    def _apply(self, view):
        self.ui.runButton.enabled = view.run_enabled
        self.ui.cancelButton.enabled = view.cancel_enabled
        self.ui.connectButton.enabled = view.connect_enabled
        self.ui.progressBar.visible = view.busy
        if view.busy:
            self.ui.progressBar.setRange(0, 0)
        self.ui.statusLabel.text = view.status
        self.ui.statusLabel.setStyleSheet("color: #c0392b; font-weight: bold;" if view.error else "")
        has_result = self._result is not None and slicer.mrmlScene.IsNodePresent(self._result)
        for w in (self.ui.saveDicomButton, self.ui.differenceButton, self.ui.dwiPresetComboBox):
            w.enabled = has_result

    def _poll(self):
        self.runner.poll()
        view = self.runner.view(self.ui.ctSelector.currentNode() is not None)
        self._apply(view)
        tview = self.train_runner.poll()
        if tview.error:
            self.ui.trainStatusLabel.text = tview.status
        if not view.busy and not tview.busy:
            self._timer.stop()

    def _startJob(self, runner, what, fn, on_done, files=None):
        try:
            runner.start(what, fn, on_done, files)
        except RuntimeError as exc:
            self._status(str(exc), error=True)
            return
        self._timer.start()
        self._apply(self.runner.view(self.ui.ctSelector.currentNode() is not None))

    def _status(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b; font-weight: bold;" if error else "")

    def _client(self):
        url = self.ui.serverUrlLineEdit.text.strip()
        token = self.ui.tokenLineEdit.text.strip() or None
        settings = qt.QSettings()
        settings.setValue(SETTINGS_URL, url)
        if self.ui.rememberTokenCheckBox.checked and token:
            settings.setValue(SETTINGS_TOKEN, token)
        else:
            settings.remove(SETTINGS_TOKEN)
        return CT2DWIClient(url, token=token)

    def _clientOrReport(self):
        """The client for the server URL, or None after showing why the URL cannot be used."""
        try:
            return self._client()
        except ServerError as exc:
            self._status(str(exc), error=True)
            return None

    def _onInputsChanged(self, *_):
        mask = self.ui.maskSelector.currentNode()
        is_seg = mask is not None and mask.IsA("vtkMRMLSegmentationNode")
        if is_seg and self.ui.segmentComboBox.count == 0:
            for sid, name in mrml.list_segments(mask):
                self.ui.segmentComboBox.addItem(name, sid)
        elif not is_seg:
            self.ui.segmentComboBox.clear()
        self.ui.segmentComboBox.enabled = is_seg
        self._apply(self.runner.view(self.ui.ctSelector.currentNode() is not None))

    # ------------------------------------------------------------------ synthesis
    def onConnect(self):
        try:
            client = self._client()
        except ServerError as exc:
            self.runner.fail(str(exc))
            self._apply(self.runner.view())
            return

        def done(result):
            ready, detail = result
            if not ready:
                raise ServerError(f"connected, but {detail}")
            return f"Connected - model ready ({detail})"

        self._startJob(self.runner, "Contacting server", lambda cancel: client.model_ready(), done)

    def onRun(self):
        ct = self.ui.ctSelector.currentNode()
        mask = self.ui.maskSelector.currentNode()
        files = TempFolder()
        try:
            client = self._client()
            mrml.check_transforms(ct, mask)
            ct_path, mask_path, mask_label = self.logic.exportInputs(ct, mask, self.ui.segmentComboBox.currentData, files.path)
        except (ServerError, IOError, ValueError) as exc:
            files.cleanup()
            self.runner.fail(str(exc))
            self._apply(self.runner.view())
            return
        self._inputs = (ct, mask_label, self.ui.outlineSelector.currentNode() or mask_label)
        self._saveParameters()
        self._startJob(self.runner, "Synthesizing DWI",
                       lambda cancel: client.infer(ct_path, mask_path, out_dir=files.path, cancel=cancel, probability=True),
                       self._onSynthesized, files)

    def onCancel(self):
        self.runner.cancel()
        self._apply(self.runner.view())

    def _onSynthesized(self, result):
        """GUI thread; an exception here ends in the error state (never a stuck status)."""
        path, info = result
        ct, mask_label, outline = self._inputs
        node = self.logic.showResult(path, ct, mask_label, info, outline if self.ui.showOutlineCheckBox.checked else None,
                                     overlay=self.ui.overlayRadio.checked, opacity=self.ui.opacitySlider.value)
        self._result = node
        self._probability, self._suspected = None, None
        self._operating = operating_threshold(info)
        if self._operating is not None:  # each new result starts at its model's operating point
            self.ui.probabilityThresholdSlider.value = self._operating
        if info.get("probability_path"):
            self._probability = mrml.load_probability(slicer.mrmlScene, info["probability_path"], ct, info,
                                                      self.ui.probabilityThresholdSlider.value)
            mrml.probability_color_bar(slicer.mrmlScene, self._probability)
            self.onProbabilityChanged()
        else:
            self.ui.suspectedInfarctLabel.text = "This model gives no infarct-probability map."
        self._saveParameters()
        self.ui.dwiPresetComboBox.clear()
        for name in self.logic.dwiPresets(node, mask_label):
            self.ui.dwiPresetComboBox.addItem(name)
        self.logic.updateBanners(BANNER)
        if self.ui.crosshairCheckBox.checked:
            mrml.link_crosshair(slicer.mrmlScene)
        done = f"Done: '{node.GetName()}' ({info.get('mask_source', '')} mask, model {info.get('checkpoint', '')}, {info.get('device', '')})"
        return "\n".join([done] + reading_cautions(info))  # the reader sees what limits this particular image

    # ------------------------------------------------------------------ view and save
    def onProbabilityChanged(self, *_):
        """Checkbox and threshold slider: the overlay over the CT (Red) and the synthetic DWI (Yellow), voxels below
        the threshold hidden, and the 'suspected infarct' segment with its volume, refilled in the same node."""
        prob = getattr(self, "_probability", None)
        if prob is None or self._inputs is None:
            return
        t = self.ui.probabilityThresholdSlider.value
        mrml.set_probability_threshold(prob, t)
        self._suspected, ml = mrml.suspected_infarct_segment(slicer.mrmlScene, prob, t, reuse=getattr(self, "_suspected", None))
        if self.ui.showProbabilityCheckBox.checked:
            mrml.show_probability_overlay(slicer.mrmlScene, prob, {"Red": self._inputs[0], "Yellow": self._result})
        else:
            self.onLayoutChanged()
        self.ui.suspectedInfarctLabel.text = suspected_infarct_text(t, ml, getattr(self, "_operating", None))
        self.logic.updateBanners(BANNER)

    def onOutlineToggled(self, checked):
        if self._inputs is not None:
            mrml.set_outline(slicer.mrmlScene, self._inputs[2] if checked else None)

    def onLayoutChanged(self, *_):
        if self._result is None or self._inputs is None:
            return
        ct = self._inputs[0]
        if self.ui.overlayRadio.checked:
            mrml.configure_overlay(slicer.mrmlScene, ct, self._result, self.ui.opacitySlider.value)
        else:
            mrml.configure_side_by_side(slicer.mrmlScene, ct, self._result, self._inputs[2] if self.ui.showOutlineCheckBox.checked else None)
        self.logic.updateBanners(BANNER)
        self._saveParameters()

    def onCtPreset(self, index):
        ct = self.ui.ctSelector.currentNode()
        name = self.ui.ctPresetComboBox.itemText(index)
        if ct is not None and name in mrml.CT_PRESETS:
            mrml.apply_window(ct, *mrml.CT_PRESETS[name])

    def onDwiPreset(self, index):
        if self._result is None:
            return
        presets = self.logic.dwiPresets(self._result, self._inputs[1] if self._inputs else None)
        name = self.ui.dwiPresetComboBox.itemText(index)
        if name in presets:
            mrml.apply_window(self._result, *presets[name])

    def onCrosshair(self, checked):
        if checked:
            mrml.link_crosshair(slicer.mrmlScene)
        else:
            node = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
            if node is not None:
                node.SetCrosshairMode(slicer.vtkMRMLCrosshairNode.NoCrosshair)

    def onDifference(self):
        real = self.ui.realDwiSelector.currentNode()
        if real is None or self._result is None:
            self._status("Select a real DWI (on the CT grid) first", error=True)
            return
        try:
            diff = mrml.difference_volume(slicer.mrmlScene, self._result, real, self._inputs[1] if self._inputs else None)
        except ValueError as exc:
            self._status(str(exc), error=True)
            return
        slicer.util.setSliceViewerLayers(foreground=diff, foregroundOpacity=0.6)
        self.logic.updateBanners(BANNER)
        self._status(f"Difference view '{diff.GetName()}' (research use)")

    def onSaveDicom(self):
        if self._result is None or self._inputs is None:
            return
        try:
            n = self.logic.exportDicom(self._result, self._inputs[0])
        except Exception as exc:  # noqa: BLE001 - Slicer's DICOM exporter raises many kinds
            self._status(f"DICOM export failed: {exc}", error=True)
            return
        self._status(f"Saved {n} SYNTHETIC DWI DICOM file(s) into the CT's study in the DICOM database")

    # ------------------------------------------------------------------ training (every call off the GUI thread)
    def onTrainStart(self):
        params = {"epochs": int(self.ui.epochsSpinBox.value)}
        client = self._clientOrReport()
        if client is None:
            return

        def done(result):
            self._train_timer.start()
            return f"Training {result.get('status', 'submitted').lower()} on the server"

        self._startJob(self.train_runner, "Starting training", lambda cancel: client.train_start(**params), done)

    def onTrainStatus(self):
        if self.train_runner.view().busy:
            return  # the previous poll is still waiting for the server
        try:
            client = self._client()
        except ServerError as exc:
            self._train_timer.stop()
            self._status(str(exc), error=True)
            return

        def done(status):
            self.ui.trainStatusLabel.text = training_summary(status)
            if status.get("status") not in ("RUNNING", "SUBMITTED"):
                self._train_timer.stop()
            return "Training status updated"

        self._startJob(self.train_runner, "Reading training status", lambda cancel: client.train_status(), done)

    def onTrainStop(self):
        client = self._clientOrReport()
        if client is None:
            return

        def done(res):
            self._train_timer.stop()
            self.ui.trainStatusLabel.text = training_summary(res)
            return "Training stopped; the served model is unchanged"

        self.train_runner.reset()
        self._startJob(self.train_runner, "Stopping training", lambda cancel: client.train_stop(), done)

    def onVersionsRefresh(self):
        client = self._clientOrReport()
        if client is None:
            return
        self._startJob(self.train_runner, "Reading model versions", lambda cancel: client.versions(), self._onVersions)

    def _onVersions(self, versions):
        self._versions = {v["id"]: v for v in versions}
        self.ui.versionsComboBox.clear()
        for v in versions:
            self.ui.versionsComboBox.addItem(version_label(v), v["id"])
            if v.get("served"):
                self.ui.versionsComboBox.setCurrentIndex(self.ui.versionsComboBox.count - 1)
        return f"{len(versions)} model version(s) on the server"

    def onVersionPromote(self):
        vid = self.ui.versionsComboBox.currentData
        if vid is None:
            self._status("Refresh the version list first", error=True)
            return
        client = self._clientOrReport()
        if client is None:
            return
        warning = promotion_warning(self._versions.get(vid, {}))
        if warning and not slicer.util.confirmYesNoDisplay(f"{warning}.\n\nServe model version {vid} anyway?",
                                                           windowTitle="Candidate worse on lesions"):
            return
        self._startJob(self.train_runner, f"Serving model version {vid}",
                       lambda cancel: (client.promote(vid, confirm=bool(warning)), client.versions())[1], self._onVersions)


class CT2DWILogic(ScriptedLoadableModuleLogic):
    def exportInputs(self, ct, mask, segment_id, folder):
        """Writes the CT (its own frame; the result goes back under its parent transform) and the mask
        (labelmap, or the chosen segment exported onto the CT grid) into the job's temporary folder.
        Returns (ct_path, mask_path or None, labelmap node or None)."""
        if ct is None:
            raise ValueError("select a CT volume")
        ct_path = mrml.write_volume(slicer.mrmlScene, ct, os.path.join(folder, "ct.nrrd"))
        if mask is None:
            return str(ct_path), None, None
        label = mask
        if mask.IsA("vtkMRMLSegmentationNode"):
            if not segment_id:
                raise ValueError(f"choose the brain segment of '{mask.GetName()}'")
            label = mrml.segment_to_labelmap(slicer.mrmlScene, mask, segment_id, ct)
        mask_path = mrml.write_volume(slicer.mrmlScene, label, os.path.join(folder, "mask.nrrd"))
        return str(ct_path), str(mask_path), label

    def showResult(self, path, ct, mask_label, info, outline=None, overlay=False, opacity=0.5):
        node = mrml.load_synthetic(slicer.mrmlScene, path, ct, mask_label, info)
        if overlay:
            mrml.configure_overlay(slicer.mrmlScene, ct, node, opacity)
        else:
            mrml.configure_side_by_side(slicer.mrmlScene, ct, node, outline)
        slicer.util.resetSliceViews()
        return node

    def dwiPresets(self, node, mask_label):
        brain = mrml.node_array(mask_label) if mask_label is not None else None
        return mrml.dwi_presets(mrml.node_array(node), brain)

    def updateBanners(self, text):
        """The banner goes with the synthetic volume: every view that shows one gets it, the others lose it."""
        lm = slicer.app.layoutManager()
        showing = set(mrml.views_showing_synthetic(slicer.mrmlScene))
        for name in lm.sliceViewNames():
            widget = lm.sliceWidget(name)
            ca = widget.sliceView().cornerAnnotation()
            ca.SetText(vtk.vtkCornerAnnotation.UpperEdge, text if name in showing else "")
            ca.GetTextProperty().SetColor(1.0, 0.25, 0.2)
            widget.sliceView().forceRender()

    def exportDicom(self, node, ct):
        """Exports the synthetic volume into the CT's study in Slicer's DICOM database with the SYNTHETIC tags."""
        import DICOMScalarVolumePlugin

        tags = mrml.dicom_export_tags(ct.GetName(), node.GetAttribute("CT2DWI.Checkpoint") or "")
        sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        item = sh.GetItemByDataNode(node)
        sh.SetItemParent(item, sh.GetItemParent(sh.GetItemByDataNode(ct)))
        exporter = DICOMScalarVolumePlugin.DICOMScalarVolumePluginClass()
        exportables = exporter.examineForExport(item)
        for exp in exportables:
            for k, v in tags.items():
                exp.setTag(k, v)
            exp.directory = slicer.dicomDatabase.databaseDirectory + "/CT2DWI_export"
            os.makedirs(exp.directory, exist_ok=True)
        exporter.export(exportables)
        return len(exportables)

    def cleanup(self):
        mrml.remove_temporary_nodes(slicer.mrmlScene)


class CT2DWITest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (ctest). Without a server it still tests the module's own work on a volume it makes:
    loading a result onto the CT grid under the CT's transform, the layouts and the banner; with a server at
    CT2DWI_SERVER (default http://127.0.0.1:8000) it also runs a real synthesis, or says clearly that it skipped it."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_local_result_handling()
        self.setUp()
        self.test_round_trip()

    def _make_ct(self):
        import numpy as np

        a = np.full((12, 64, 64), -1000, np.int16)
        a[:, 12:52, 12:52] = 30
        ct = slicer.util.addVolumeFromArray(a, name="CT test")
        ct.SetSpacing(2.0, 2.0, 5.0)
        return ct

    def test_local_result_handling(self):
        import numpy as np

        ct = self._make_ct()
        tf = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        ct.SetAndObserveTransformNodeID(tf.GetID())
        folder = TempFolder()
        try:
            path = mrml.write_volume(slicer.mrmlScene, ct, os.path.join(folder.path, "SYNTHETIC_DWI.nii.gz"))
            node = CT2DWILogic().showResult(path, ct, None, {"checkpoint": "test"})
            self.assertIn("SYNTHETIC", node.GetName())
            self.assertEqual(node.GetTransformNodeID(), tf.GetID())
            CT2DWILogic().updateBanners(BANNER)
            self.assertEqual(mrml.views_showing_synthetic(slicer.mrmlScene), ["Yellow"])
            self.assertTrue(np.isfinite(slicer.util.arrayFromVolume(node)).all())
        finally:
            folder.cleanup()
        self.assertFalse(folder.exists)
        self.delayDisplay("CT2DWI local result handling passed")

    def test_round_trip(self):
        url = default_server_url()
        client = CT2DWIClient(url)
        try:
            ready, detail = client.model_ready()
        except ServerError as exc:
            self.delayDisplay(f"SKIPPED the server round trip: {exc}")
            return
        if not ready:
            self.delayDisplay(f"SKIPPED the server round trip: {detail}")
            return
        ct_file = os.environ.get("CT2DWI_TEST_CT")
        ct = slicer.util.loadVolume(ct_file) if ct_file else self._make_ct()
        folder = TempFolder()
        try:
            ct_path, _, _ = CT2DWILogic().exportInputs(ct, None, None, str(folder.path))
            try:
                path, info = client.infer(ct_path, out_dir=folder.path)
            except ServerError as exc:
                if ct_file or exc.status != 422:
                    raise
                self.delayDisplay(f"server refused the made-up CT as expected: {exc}")
                return
            node = CT2DWILogic().showResult(path, ct, None, info)
            self.assertIn("SYNTHETIC", node.GetName())
            self.assertEqual(node.GetAttribute("CT2DWI.Synthetic"), "true")
        finally:
            folder.cleanup()
        self.delayDisplay("CT2DWI round trip passed")
