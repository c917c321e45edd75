"""MRML <-> core conversions of the Slicer module on a real (headless) MRML scene from slicer-core."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")
vtk = pytest.importorskip("vtk")

from ICHAnalyzerLib.constants import HEMORRHAGE_TYPE, SUBTYPE_BY_KEY, SUBTYPE_BY_LABEL  # noqa: E402
from ICHAnalyzerLib.errors import InputError  # noqa: E402
from ICHAnalyzerLib.volume import lps_to_ras  # noqa: E402
from ICHAnalyzerSlicerLib import mrml  # noqa: E402

pytestmark = pytest.mark.slicer


def add_volume(scene, array_kji: np.ndarray, ijk_to_ras: np.ndarray, name: str = "ct"):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, array_kji)
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    return node


def axial_ras(spacing=(0.5, 0.6, 5.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A typical DICOM-derived axial grid: i to the patient's left, j posterior (RAS: -x, -y)."""
    m = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    m[:3, 3] = origin
    return m


def test_volume_node_to_ct_keeps_geometry_and_hardens_linear_transforms(scene):
    hu = np.random.default_rng(0).integers(-1000, 80, size=(4, 6, 7)).astype(np.int16)
    ras = axial_ras()
    node = add_volume(scene, hu, ras)
    ct, grid = mrml.volume_node_to_ct(node)
    assert grid.perm == (0, 1, 2)
    assert np.array_equal(ct.hu, hu)
    assert np.allclose(lps_to_ras(ct.affine), ras)
    assert ct.voxel_volume_mm3 == pytest.approx(0.5 * 0.6 * 5.0)

    shift = np.eye(4)
    shift[:3, 3] = [5.0, -3.0, 2.0]
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    ct, _ = mrml.volume_node_to_ct(node)
    assert np.allclose(lps_to_ras(ct.affine), shift @ ras)

    grid_transform = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    node.SetAndObserveTransformNodeID(grid_transform.GetID())
    with pytest.raises(InputError, match="non-linear"):
        mrml.volume_node_to_ct(node)


def test_sagittal_volume_is_put_in_axial_order_and_back(scene):
    # node axes: i = anterior-posterior, j = superior-inferior, k = left-right (a sagittal stack)
    ras = np.array([[0, 0, 1.0, -50], [-0.7, 0, 0, 20], [0, -0.8, 0, 60], [0, 0, 0, 1]])
    array = np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4)  # [k, j, i] in node order
    node = add_volume(scene, array, ras)
    ct, grid = mrml.volume_node_to_ct(node)
    assert grid.perm == (2, 0, 1)  # core i = node k (left-right), core k = node j (superior-inferior)
    assert ct.shape == (5, 4, 3)
    assert np.array_equal(grid.to_node(ct.hu), array)
    # the same voxel lands on the same point in both orders
    node_ijk = np.array([2, 3, 1])  # value array[1, 3, 2]
    core_ijk = node_ijk[list(grid.perm)]
    assert ct.hu[core_ijk[2], core_ijk[1], core_ijk[0]] == array[1, 3, 2]
    assert np.allclose(ct.voxel_to_lps(core_ijk), mrml.lps_points_to_ras((ras @ [*node_ijk, 1])[:3]))


@pytest.mark.parametrize("layout", ["axial", "sagittal", "tilted"])
def test_core_reads_back_the_grid_the_module_hands_it(scene, tmp_path, layout):
    """The background run writes the CT to NRRD and loads the core's label map onto the same grid:
    the core's reader must see exactly the module's CTVolume (same axis order, affine, voxels)."""
    from ICHAnalyzerLib.io import load_ct

    rng = np.random.default_rng(1)
    array = rng.integers(-1000, 1000, size=(6, 7, 8)).astype(np.int16)
    ras = axial_ras()
    if layout == "sagittal":
        ras = np.array([[0, 0, 1.0, -50], [-0.7, 0, 0, 20], [0, -0.8, 0, 60], [0, 0, 0, 1]])
    elif layout == "tilted":  # gantry tilt: the slice step leans towards the row direction (sheared grid)
        ras[:3, 2] = [0.0, -5.0 * np.tan(np.radians(22.0)), 5.0]
    ct, _ = mrml.volume_node_to_ct(add_volume(scene, array, ras))
    mrml.write_temporary_nrrd(tmp_path / "ct.nrrd", ct)
    back = load_ct(tmp_path / "ct.nrrd")
    assert np.allclose(back.affine, ct.affine) and np.array_equal(back.hu, ct.hu)
    assert back.tilt_deg == pytest.approx(22.0 if layout == "tilted" else 0.0, abs=1e-6)


def test_labels_to_segmentation_and_back(scene):
    shape = (5, 8, 9)
    node = add_volume(scene, np.full(shape, -1000, np.int16), axial_ras())
    labels = np.zeros(shape, np.uint8)
    labels[1:3, 2:5, 2:6] = 1  # IPH
    labels[3, 1:3, 6:8] = 4  # SDH
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    created = mrml.labels_to_segmentation(labels, node, segmentation_node)
    assert created == ["IPH", "SDH"]
    segmentation = segmentation_node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2
    for key in created:
        segment = segmentation.GetSegment(key)
        subtype = SUBTYPE_BY_KEY[key]
        assert segment.GetName() == subtype.name
        assert np.allclose(segment.GetColor(), subtype.color)
        terminology = mrml.segment_terminology(segment)
        assert HEMORRHAGE_TYPE[1] in terminology and subtype.region_code[1] in terminology
    display = segmentation_node.GetDisplayNode()
    assert display.GetVisibility2DFill() and display.GetVisibility2DOutline()

    back, ignored = mrml.segmentation_to_labels(segmentation_node, node)
    assert ignored == []
    assert np.array_equal(back, labels)

    # a segment the user adds by hand, named after a subtype, counts; an unknown one is reported
    extra = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")  # keeps scene busy: IDs must not clash
    assert extra is not None
    segmentation.AddEmptySegment("Segment_9", "Other stuff")
    _, ignored = mrml.segmentation_to_labels(segmentation_node, node)
    assert ignored == ["Other stuff"]


def test_label_shape_mismatch_is_refused(scene):
    node = add_volume(scene, np.zeros((3, 4, 5), np.int16), axial_ras())
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(InputError, match="does not match"):
        mrml.labels_to_segmentation(np.zeros((3, 4, 6), np.uint8), node, segmentation_node)


def test_volume_rows_flag_large_abc2_disagreement():
    def entry(ml, abc2_ml, diff, count=10):
        return {"voxel_count": count, "volume_ml": ml, "abc2_ml": abc2_ml, "abc2_difference_pct": diff,
                "abc2": {"A_mm": 30.0, "B_mm": 20.0, "C_mm": 10.0}, "max_thickness_mm": 7.5}

    empty = {"voxel_count": 0, "volume_ml": 0.0, "abc2_ml": None, "abc2_difference_pct": None, "abc2": None}
    volumes = {"IPH": entry(10.0, 13.0, 30.0), "IVH": empty, "SAH": empty, "SDH": entry(5.0, 5.5, 10.0),
               "EDH": empty, "total": entry(15.0, None, None, 20)}
    rows = mrml.volume_rows(volumes)
    assert [r[0] for r in rows] == ["IPH", "SDH", "Total"]
    iph, sdh, _ = rows
    assert "differs" in iph[mrml.VOLUME_COLUMNS.index("Flag")]
    assert sdh[mrml.VOLUME_COLUMNS.index("Flag")] == ""
    volumes["SDH"]["abc2_clinically_applicable"] = False
    assert "not applicable" in mrml.volume_rows(volumes)[1][mrml.VOLUME_COLUMNS.index("Flag")]
    # thickness only for the extra-axial subtypes
    assert iph[mrml.VOLUME_COLUMNS.index("Max thickness (mm)")] == ""
    assert sdh[mrml.VOLUME_COLUMNS.index("Max thickness (mm)")] == "7.5"


def test_line_endpoints_flip_lps_to_ras(scene):
    volumes = {key: {"abc2": None} for key in ("IPH", "IVH", "SAH", "SDH", "EDH")}
    volumes["IVH"] = {"abc2": {"A_endpoints": [[1.0, 2.0, 3.0], [4.0, 6.0, 3.0]],
                               "B_endpoints": [[0.0, 0.0, 3.0], [0.0, 3.0, 3.0]]},
                      "thickness_endpoints": [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]}  # IVH: no thickness line
    volumes["SDH"] = {"abc2": None, "thickness_endpoints": [[10.0, 0.0, 5.0], [17.0, 0.0, 5.0]]}
    specs = mrml.measurement_line_specs(volumes)
    assert [(name, key) for name, key, _ in specs] == [("IVH A", "IVH"), ("IVH B", "IVH"),
                                                       ("SDH thickness", "SDH")]
    assert np.allclose(specs[2][2], [[-10.0, 0.0, 5.0], [-17.0, 0.0, 5.0]])
    line = mrml.update_line_node(scene, None, *specs[0])
    points = slicer.util.arrayFromMarkupsControlPoints(line)
    assert np.allclose(points, [[-1.0, -2.0, 3.0], [-4.0, -6.0, 3.0]])
    assert line.GetLineLengthWorld() == pytest.approx(5.0)
    assert SUBTYPE_BY_LABEL[2].key == "IVH"


def test_dicom_series_uid_comes_from_the_subject_hierarchy(scene):
    node = add_volume(scene, np.zeros((3, 4, 5), np.int16), axial_ras())
    assert mrml.volume_node_to_ct(node)[0].series_uid is None
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = hierarchy.GetItemByDataNode(node)
    if not item:
        item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    hierarchy.SetItemUID(item, "DICOM", "1.2.840.99.1")
    assert mrml.volume_node_to_ct(node)[0].series_uid == "1.2.840.99.1"


def test_slice_plot_has_one_series_per_finding_with_values(scene):
    keys = ("any", "IPH", "IVH", "SAH", "SDH", "EDH")
    slices = []
    for k in range(4):
        probs = {key: (None if key == "EDH" else round(0.1 * k + 0.01 * n, 3)) for n, key in enumerate(keys)}
        slices.append({"index": k, "z_mm": 5.0 * k, "grid_k": float(k), "probabilities": probs})
    report = {"slices": slices}
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    present = mrml.fill_slice_table(table, report)
    assert present == ["any", "IPH", "IVH", "SAH", "SDH"]  # EDH has no value: no curve
    assert np.allclose(slicer.util.arrayFromTableColumn(table, "IPH"), [0.01, 0.11, 0.21, 0.31])
    assert np.isnan(slicer.util.arrayFromTableColumn(table, "EDH")).all()
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode")
    mrml.fill_slice_plot(scene, chart, table, present)
    assert chart.GetNumberOfPlotSeriesNodes() == 5
    series = chart.GetNthPlotSeriesNode(1)
    assert (series.GetXColumnName(), series.GetYColumnName()) == ("slice", "IPH")
    assert np.allclose(series.GetColor(), SUBTYPE_BY_KEY["IPH"].color)
    # refilling replaces the curves instead of piling them up
    mrml.fill_slice_plot(scene, chart, table, present[:2])
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    assert scene.GetNodesByClass("vtkMRMLPlotSeriesNode").GetNumberOfItems() == 2


def test_detection_table_shows_probabilities_or_the_reason(scene):
    table = scene.AddNewNodeByClass("vtkMRMLTableNode")
    detection = {"any": 0.93, "IPH": 0.9, "IVH": 0.2, "SAH": 0.05, "SDH": 0.01, "EDH": 0.0, "reason": None}
    mrml.fill_detection_table(table, {"detection": detection})
    rows = mrml.table_rows(table)
    assert [r["Probability"] for r in rows] == ["0.930", "0.900", "0.200", "0.050", "0.010", "0.000"]
    mrml.fill_detection_table(table, {"detection": {**{k: None for k in detection}, "reason": "no model"}})
    rows = mrml.table_rows(table)
    assert rows[-1] == {"Finding": "Note", "Probability": "no model"}
    # the model ran without the atlas (no template files): the panel says what that means for IVH
    model = {"name": "m", "version": "1", "ventricle_prior": "not applied: template/atlas files not found"}
    mrml.fill_detection_table(table, {"detection": detection, "model": model})
    rows = mrml.table_rows(table)
    assert len(rows) == 7 and rows[-1]["Finding"] == "Note"
    assert "may be labelled IPH" in rows[-1]["Probability"]
    model["ventricle_prior"] = "applied: IPH inside the BLAST-CT atlas ventricles counted as IVH"
    mrml.fill_detection_table(table, {"detection": detection, "model": model})
    assert len(mrml.table_rows(table)) == 6


def test_segments_share_one_labelmap_layer(scene):
    shape = (4, 6, 7)
    node = add_volume(scene, np.zeros(shape, np.int16), axial_ras())
    labels = np.zeros(shape, np.uint8)
    labels[1, 1:3, 1:3] = 2
    labels[2, 3:5, 4:6] = 3
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mrml.labels_to_segmentation(labels, node, segmentation_node)
    assert segmentation_node.GetSegmentation().GetNumberOfLayers() == 1
    assert np.array_equal(mrml.segmentation_to_labels(segmentation_node, node)[0], labels)


def test_voxel_types_keep_their_values(scene):
    wide = np.array([-1000, 0, 40000], np.int32).repeat(8).reshape(2, 3, 4)
    ct, _ = mrml.volume_node_to_ct(add_volume(scene, wide, axial_ras()))
    assert ct.hu.dtype == np.float32 and np.array_equal(ct.hu, wide)  # no int16 wrap-around
    narrow = np.array([-1024, 0, 3000], np.int32).repeat(8).reshape(2, 3, 4)
    ct, _ = mrml.volume_node_to_ct(add_volume(scene, narrow, axial_ras(), "narrow"))
    assert ct.hu.dtype == np.int16 and np.array_equal(ct.hu, narrow)
