"""ICHAnalyzer 3D Slicer module: intracranial hemorrhage detection, segmentation and volumetry on head CT.

A thin GUI over ``ICHAnalyzerSlicerLib`` (MRML <-> core conversions, no qt) and ``ICHAnalyzerLib`` (the
core, shared with the ``ichanalyzer`` command line). The analysis runs in a background process; results are
loaded only after it succeeds.
"""

import json
import logging
import os
import time

import qt
import slicer
import vtk
from ICHAnalyzerSlicerLib import logic as slicerlogic
from ICHAnalyzerSlicerLib import mrml
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICES = ("auto", "cpu", "cuda")
DEVICE_LABELS = {"auto": "Auto", "cpu": "CPU", "cuda": "GPU (CUDA)"}
POLL_INTERVAL_MS = 500
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
GCS_UNKNOWN = 2  # the GCS spin box's "unknown" value (real GCS is 3..15)
AGE_UNKNOWN = -1  # the age spin box's "unknown" value


#
# ICHAnalyzer
#


class ICHAnalyzer(ScriptedLoadableModule):
    """Module description (see ScriptedLoadableModule)."""

    def __init__(self, parent: qt.QWidget) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "ICH Analyzer"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["ICHAnalyzer developers"]
        self.parent.helpText = """
Finds intracranial hemorrhage on non-contrast head CT, classifies its subtype (IPH, IVH, SAH, SDH, EDH),
segments it and measures it: volume from the voxels, next to the bedside ABC/2 estimate.
Select a CT volume and click Analyze. Edit the segments in Segment Editor, then click Recompute.
Research software: not for clinical use.
"""
        self.parent.acknowledgementText = """
Uses 3D Slicer, MONAI, PyTorch, SimpleITK, pydicom, nibabel and slicerio.
"""


#
# Parameter node
#


@parameterNodeWrapper
class ICHAnalyzerParameterNode:
    """Module state kept in the scene: the input volume and the device."""

    inputVolume: vtkMRMLScalarVolumeNode
    device: str = "auto"


#
# Widget
#


class ICHAnalyzerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: input, Analyze/Cancel, progress, results, navigation, edit, recompute, export."""

    def __init__(self, parent: "qt.QWidget | None" = None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.job = None
        self.jobStart = 0.0
        self.compareAfterJob = False  # the running job analyses the follow-up CT for a comparison
        self.connectedPlotViews = []
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self.onPollJob)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ICHAnalyzer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = ICHAnalyzerLogic()

        for device in DEVICES:
            self.ui.deviceComboBox.addItem(DEVICE_LABELS[device], device)
        self.ui.progressBar.setVisible(False)
        self.ui.exportDirectoryButton.directory = qt.QDir.homePath()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.analyzeButton.connect("clicked(bool)", self.onAnalyzeButton)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.jumpToSliceButton.connect("clicked(bool)", self.onJumpToSlice)
        self.ui.nextPositiveSliceButton.connect("clicked(bool)", self.onNextPositiveSlice)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)
        self.ui.recomputeButton.connect("clicked(bool)", self.onRecompute)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.showPlotButton.connect("clicked(bool)", self.onShowPlot)
        self.ui.followupVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onFollowupChanged)
        self.ui.compareButton.connect("clicked(bool)", self.onCompare)

        self.initializeParameterNode()
        self.updateResultWidgets()

    def cleanup(self) -> None:
        self.cancelJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller: vtk.vtkObject, event: int) -> None:
        self.cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller: vtk.vtkObject, event: int) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.updateResultWidgets()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: "ICHAnalyzerParameterNode | None") -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            index = self.ui.deviceComboBox.findData(self._parameterNode.device)
            self.ui.deviceComboBox.setCurrentIndex(max(index, 0))
        self.updateButtons()

    # ------------------------------------------------------------------ state

    def inputVolume(self) -> "vtkMRMLScalarVolumeNode | None":
        return self._parameterNode.inputVolume if self._parameterNode else None

    def currentResult(self) -> "vtkMRMLSegmentationNode | None":
        volume = self.inputVolume()
        return self.logic.find_result(volume) if volume else None

    def updateButtons(self, caller: "vtk.vtkObject | None" = None, event: int | None = None) -> None:
        running = self.job is not None
        volume = self.inputVolume()
        hasResult = self.currentResult() is not None
        self.ui.analyzeButton.text = "Cancel" if running else "Analyze"
        self.ui.analyzeButton.toolTip = "Stop the analysis" if running else "Analyse the selected CT volume"
        self.ui.analyzeButton.enabled = running or volume is not None
        self.ui.inputVolumeSelector.enabled = not running
        self.ui.deviceComboBox.enabled = not running
        self.ui.followupVolumeSelector.enabled = not running
        for widget in (self.ui.recomputeButton, self.ui.exportButton, self.ui.segmentEditorButton,
                       self.ui.show3DButton, self.ui.jumpToSliceButton, self.ui.nextPositiveSliceButton,
                       self.ui.showPlotButton):
            widget.enabled = hasResult and not running
        followup = self.ui.followupVolumeSelector.currentNode()
        self.ui.compareButton.enabled = (hasResult and not running and followup is not None
                                         and followup is not volume)

    def patientValues(self) -> "tuple[int | None, int | None]":
        """(GCS, age) from the panel; None where left at "unknown"."""
        gcs = self.ui.gcsSpinBox.value
        age = self.ui.ageSpinBox.value
        return (None if gcs == GCS_UNKNOWN else int(gcs), None if age == AGE_UNKNOWN else int(age))

    def updateResultWidgets(self) -> None:
        """Point the tables at the current volume's result (or clear them)."""
        segmentation = self.currentResult()
        nodes = self.logic.result_nodes(segmentation) if segmentation else None
        self.ui.detectionTableView.setMRMLTableNode(nodes.detection_table if nodes else None)
        self.ui.volumesTableView.setMRMLTableNode(nodes.volumes_table if nodes else None)
        if nodes:
            volume = self.inputVolume()
            self.ui.sliceSpinBox.maximum = max(0, self.logic.slice_count(volume) - 1)
            report = self.logic.current_report(segmentation)
            self.ui.labelsSourceLabel.text = f"Labels: {report['source_of_labels']}"
            self.ui.clinicalLabel.text = mrml.clinical_summary(report)
        else:
            self.ui.labelsSourceLabel.text = ""
            self.ui.clinicalLabel.text = ""
        self.updateComparisonWidgets()
        self.updateButtons()

    def updateComparisonWidgets(self) -> None:
        """Show the change table and expansion flags of the current baseline's last comparison."""
        volume = self.inputVolume()
        table = self.logic.comparison_table(volume) if volume else None
        self.ui.comparisonTableView.setMRMLTableNode(table)
        comparison = table.GetAttribute(slicerlogic.COMPARISON_ATTRIBUTE) if table else None
        self.ui.expansionLabel.text = mrml.expansion_summary(json.loads(comparison)) if comparison else ""

    def onInputChanged(self, node: "slicer.vtkMRMLNode | None") -> None:
        self.updateResultWidgets()

    def onFollowupChanged(self, node: "slicer.vtkMRMLNode | None") -> None:
        self.updateButtons()

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index) or "auto"

    def setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        slicer.app.processEvents()

    # ------------------------------------------------------------------ analysis

    def onAnalyzeButton(self) -> None:
        if self.job is not None:
            self.cancelJob()
            self.setStatus("Cancelled: nothing was loaded.")
            return
        volume = self.inputVolume()
        if volume is None:
            return
        if not self.ensureDependencies():
            return
        if self.logic.is_edited(volume) and not slicer.util.confirmYesNoDisplay(
            f"The segmentation of '{volume.GetName()}' was edited. Analysing again replaces it and "
            "the edits are lost. Replace it?\n\n(Choose No and export it first to keep the edits.)",
            windowTitle="ICH Analyzer",
        ):
            self.setStatus("Analysis not started: the edited segmentation was kept.")
            return
        self.startJob(volume, replace_edits=True)

    def startJob(self, volume: vtkMRMLScalarVolumeNode, replace_edits: bool) -> bool:
        """Start the background analysis of ``volume`` with the panel's device, GCS and age."""
        gcs, age = self.patientValues()
        try:
            device = self._parameterNode.device
            self.job = self.logic.start_background(volume, device=device, replace_edits=replace_edits,
                                                   gcs=gcs, age=age)
        except Exception as exc:
            slicer.util.errorDisplay(f"Cannot start the analysis: {exc}")
            return False
        self.jobStart = time.time()
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.value = 0
        self.setStatus(f"Starting ({volume.GetName()})...")
        self.timer.start()
        self.updateButtons()
        return True

    def onPollJob(self) -> None:
        job = self.job
        if job is None:
            self.timer.stop()
            return
        running = job.poll()
        self.ui.progressBar.value = int(round(100 * job.fraction))
        self.ui.statusLabel.text = f"{job.step} ({time.time() - self.jobStart:.0f} s)"
        if running:
            return
        self.timer.stop()
        self.job = None
        self.ui.progressBar.setVisible(False)
        compare, self.compareAfterJob = self.compareAfterJob, False
        try:
            if job.returncode == 0 and not job.cancelled:
                nodes = self.logic.finish_background(job)
                if compare:  # the follow-up was analysed: compare it now, keep showing the baseline
                    self.runComparison()
                else:
                    self.showResult(nodes)
                    self.setStatus(f"Done in {time.time() - self.jobStart:.0f} s.")
            else:
                message = job.error_message()
                job.cleanup()
                self.setStatus(f"Failed: {message}")
                if not job.cancelled:
                    slicer.util.errorDisplay(f"The analysis failed:\n{message}",
                                             detailedText="\n".join(job.output[-50:]))
        except Exception as exc:
            logging.exception("ICHAnalyzer: loading the results failed")
            self.setStatus(f"Failed: {exc}")
            slicer.util.errorDisplay(f"Cannot load the results: {exc}")
        finally:
            self.updateResultWidgets()

    def cancelJob(self) -> None:
        if self.job is not None:
            self.timer.stop()
            self.job.cancel()
            self.job.cleanup()
            self.job = None
            self.ui.progressBar.setVisible(False)
        self.compareAfterJob = False
        self.updateButtons()

    def showResult(self, nodes: slicerlogic.ResultNodes) -> None:
        volume = self.inputVolume()
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        nodes.segmentation.SetDisplayVisibility(True)
        self.updateResultWidgets()
        self.onNextPositiveSlice()

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self) -> bool:
        """Offer to install what the core needs in Slicer's Python; False when it is still missing."""
        missing = slicerlogic.missing_dependencies()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
            "ICH Analyzer needs these Python packages, not yet installed in Slicer: "
            f"{', '.join(missing)}.\nInstall them now? (This can take several minutes; the model weights are "
            "bundled with the extension, nothing else is downloaded.)",
            windowTitle="ICH Analyzer",
        ):
            slicer.util.warningDisplay(
                "ICH Analyzer cannot run without: " + ", ".join(missing) + ".\nInstall them later with the "
                "Analyze button, or from the Python console with slicer.util.pip_install(...).",
                windowTitle="ICH Analyzer",
            )
            return False
        with slicer.util.tryWithErrorDisplay("Installing the Python packages failed.", waitCursor=True):
            if "torch" in missing:
                self.installTorch()
            requirements = slicerlogic.pip_requirements(missing)
            if requirements:
                slicer.util.pip_install(requirements)
        still = slicerlogic.missing_dependencies()
        if still:
            slicer.util.errorDisplay("Still missing after installation: " + ", ".join(still))
            return False
        return True

    def installTorch(self) -> None:
        """PyTorch through the PyTorch extension when it is installed, else pip with the CPU build."""
        try:
            import PyTorchUtils  # from the PyTorch extension
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled():
                torchLogic.installTorch(askConfirmation=False)
            return
        slicer.util.pip_install(["torch", "--index-url", TORCH_CPU_INDEX])

    # ------------------------------------------------------------------ review

    def onShowPlot(self) -> None:
        segmentation = self.currentResult()
        if segmentation is None:
            return
        chart = self.logic.result_nodes(segmentation).chart
        if chart.GetNumberOfPlotSeriesNodes() == 0:
            self.setStatus("No per-slice probabilities: labels were given or no model is installed.")
        slicer.modules.plots.logic().ShowChartInLayout(chart)
        self.connectPlotViews()

    def connectPlotViews(self) -> None:
        """Clicking a point of the probability plot jumps the slice views to that slice."""
        layoutManager = slicer.app.layoutManager()
        for index in range(layoutManager.plotViewCount):
            view = layoutManager.plotWidget(index).plotView()
            viewNode = view.mrmlPlotViewNode()
            if viewNode is not None:
                viewNode.SetInteractionMode(slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints)
            if view not in self.connectedPlotViews:
                view.connect("dataSelected(vtkStringArray*, vtkCollection*)", self.onPlotDataSelected)
                self.connectedPlotViews.append(view)

    def onPlotDataSelected(self, seriesIds: vtk.vtkStringArray, selections: vtk.vtkCollection) -> None:
        volume = self.inputVolume()
        if volume is None or self.currentResult() is None:
            return
        for index in range(selections.GetNumberOfItems()):
            pointIds = selections.GetItemAsObject(index)
            if pointIds is not None and pointIds.GetNumberOfTuples() > 0:
                k = self.logic.plot_row_slice(volume, int(pointIds.GetValue(0)))
                self.ui.sliceSpinBox.value = k
                self.logic.jump_to_slice(volume, k)
                return

    def currentSliceIndex(self) -> int:
        volume = self.inputVolume()
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceToRAS = sliceNode.GetSliceToRAS()
        center = [sliceToRAS.GetElement(row, 3) for row in range(3)]
        return self.logic.slice_index_at(volume, center)

    def onJumpToSlice(self) -> None:
        volume = self.inputVolume()
        if volume is not None:
            self.logic.jump_to_slice(volume, self.ui.sliceSpinBox.value)

    def onNextPositiveSlice(self) -> None:
        volume = self.inputVolume()
        if volume is None:
            return
        k = self.logic.next_positive_slice(volume, self.currentSliceIndex())
        if k is None:
            self.setStatus("No positive slice.")
            return
        self.ui.sliceSpinBox.value = k
        self.logic.jump_to_slice(volume, k)

    def onShow3D(self, show: bool) -> None:
        segmentation = self.currentResult()
        if segmentation is None:
            return
        if show:
            segmentation.CreateClosedSurfaceRepresentation()
        else:
            segmentation.RemoveClosedSurfaceRepresentation()
        segmentation.GetDisplayNode().SetVisibility3D(show)

    # ------------------------------------------------------------------ edit, recompute, export

    def onOpenSegmentEditor(self) -> None:
        segmentation = self.currentResult()
        if segmentation is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(self.inputVolume())
        else:  # Slicer < 5.4
            editor.setMasterVolumeNode(self.inputVolume())

    def onRecompute(self) -> None:
        volume = self.inputVolume()
        with slicer.util.tryWithErrorDisplay("Recompute failed.", waitCursor=True):
            report = self.logic.recompute(volume, patient=self.patientValues())
            changed = (report.get("edits") or {}).get("subtypes_changed", [])
            self.setStatus("Recomputed from the current segments" + (
                f" (edited: {', '.join(changed)})." if changed else " (no edits)."))
            self.updateResultWidgets()

    # ------------------------------------------------------------------ follow-up

    def onCompare(self) -> None:
        """Compare the follow-up CT with the baseline; analyse the follow-up first when it has no result."""
        followup = self.ui.followupVolumeSelector.currentNode()
        if followup is None or self.currentResult() is None or self.job is not None:
            return
        if self.logic.find_result(followup) is None:
            if not self.ensureDependencies():
                return
            self.compareAfterJob = self.startJob(followup, replace_edits=False)
            return
        self.runComparison()

    def runComparison(self) -> None:
        baseline = self.inputVolume()
        followup = self.ui.followupVolumeSelector.currentNode()
        with slicer.util.tryWithErrorDisplay("Follow-up comparison failed.", waitCursor=True):
            self.setStatus("Registering the follow-up to the baseline and comparing...")
            self.logic.compare_followup(baseline, followup)
            self.setStatus(f"Compared '{followup.GetName()}' with '{baseline.GetName()}'.")
        self.updateComparisonWidgets()

    def onExport(self) -> None:
        volume = self.inputVolume()
        folder = os.path.join(self.ui.exportDirectoryButton.directory,
                              f"{volume.GetName()}-ICHAnalyzer-{time.strftime('%Y%m%d-%H%M%S')}")
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            written = self.logic.export(volume, folder, screenshot=captureScreenshot)
            self.setStatus(f"Exported {len(written)} files to {folder}")


def captureScreenshot(path: os.PathLike | str) -> None:
    """Picture of the view layout (Screen Capture module)."""
    import ScreenCapture

    ScreenCapture.ScreenCaptureLogic().captureImageFromView(None, str(path))


#
# Logic
#


class ICHAnalyzerLogic(ScriptedLoadableModuleLogic, slicerlogic.ICHAnalyzerLogic):
    """Module logic: ``ICHAnalyzerSlicerLib.logic.ICHAnalyzerLogic`` (no qt, tested headless) plus the
    parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        slicerlogic.ICHAnalyzerLogic.__init__(self, slicer.mrmlScene)

    def getParameterNode(self) -> ICHAnalyzerParameterNode:
        return ICHAnalyzerParameterNode(super().getParameterNode())


#
# Test (run inside Slicer: see docs/user-guide.md)
#


class ICHAnalyzerTest(ScriptedLoadableModuleTest):
    """Loads the phantom, analyses it with its true labels, edits a segment, recomputes, exports."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_analyze_edit_recompute()

    def test_analyze_edit_recompute(self) -> None:
        from ICHAnalyzerSlicerLib.selftest import run_self_test

        run_self_test(ICHAnalyzerLogic(), log=self.delayDisplay)
