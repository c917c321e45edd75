"""The module's self-test scenario, shared by ``ICHAnalyzerTest`` (inside Slicer) and pytest (headless).

Phantom -> analyse with its true labels -> erase the lower half of the largest segment -> recompute ->
check against the core -> export -> analysing again must ask first. Raises ``AssertionError`` on failure.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import slicer
from ICHAnalyzerLib.constants import SUBTYPE_BY_KEY, SUBTYPE_KEYS
from ICHAnalyzerLib.volume import lps_to_ras

from . import mrml
from .logic import EditsWouldBeLostError, ICHAnalyzerLogic


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run_self_test(logic: ICHAnalyzerLogic, log: Callable[[str], None] = print) -> dict:
    """Run the scenario in ``logic``'s scene; returns the recomputed (edited) report."""
    from ICHAnalyzerLib.phantom import make_phantom
    from ICHAnalyzerLib.pipeline import measure

    scene = logic.scene
    log("Loading the phantom")
    phantom = make_phantom()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "ICHAnalyzer phantom")
    slicer.util.updateVolumeFromArray(volume, phantom.ct.hu)
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(lps_to_ras(phantom.ct.affine)))
    volume.CreateDefaultDisplayNodes()

    log("Analysing with the phantom's labels")
    nodes = logic.analyze(volume, labels=phantom.labels)
    labels, ignored = logic.current_labels(volume, nodes.segmentation)
    _check(
        ignored == [] and np.array_equal(labels, phantom.labels), "segments differ from the phantom labels"
    )
    _check(not logic.is_edited(volume), "a fresh result is reported as edited")

    log("Erasing the lower half of the largest segment, then recomputing")
    volumes = logic.model_report(nodes.segmentation)["volumes"]
    key = max(SUBTYPE_KEYS, key=lambda k: volumes[k]["voxel_count"])
    label = SUBTYPE_BY_KEY[key].label
    edited = labels.copy()
    ks = np.flatnonzero((edited == label).any(axis=(1, 2)))
    cut = int(ks[len(ks) // 2])
    edited[:cut][edited[:cut] == label] = 0
    mrml.set_segment_mask(nodes.segmentation, volume, key, edited == label)
    _check(logic.is_edited(volume), "the edit was not detected")
    report = logic.recompute(volume)
    expected = measure(phantom.ct, edited)
    _check(report["source_of_labels"] == "edited", "recomputed report is not marked as edited")
    for k in (*SUBTYPE_KEYS, "total"):
        _check(
            abs(report["volumes"][k]["volume_ml"] - expected[k]["volume_ml"]) < 1e-6,
            f"{k} volume differs from the core's measure on the edited labels",
        )
        _check(report["volumes"][k]["abc2_ml"] == expected[k]["abc2_ml"], f"{k} ABC/2 differs")

    log("Exporting")
    with tempfile.TemporaryDirectory() as folder:
        written = logic.export(volume, folder)
        _check(all(Path(p).is_file() for p in written), "export did not write every file")
        exported = json.loads((Path(folder) / "report.json").read_text())
        _check(
            exported["volumes"][key]["voxel_count"] == int((edited == label).sum()), "export lost the edit"
        )

    log("Analysing again must not replace the edits silently")
    try:
        logic.analyze(volume, labels=phantom.labels)
    except EditsWouldBeLostError:
        pass
    else:
        raise AssertionError("analysing again replaced the edited segmentation without asking")
    log("Self-test passed")
    return report
