"""Plain conversions between MRML nodes and core types (no qt, testable headless with slicer-core).

Coordinate conventions: the core works in LPS (``CTVolume.affine`` maps (i, j, k) to LPS mm, arrays are
``[k, j, i]``); MRML works in RAS. Only the first two axes flip: ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from ICHAnalyzerLib.constants import (
    HEMORRHAGE_CATEGORY,
    HEMORRHAGE_TYPE,
    SUBTYPE_BY_KEY,
    SUBTYPES,
    Subtype,
)
from ICHAnalyzerLib.errors import InputError
from ICHAnalyzerLib.report import ventricle_prior_warning
from ICHAnalyzerLib.volume import CTVolume, ras_to_lps
from vtk.util import numpy_support

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
ABC2_DISAGREEMENT_PCT = 20.0  # |ABC/2 - voxel volume| / voxel volume above this is flagged


def ensure_segmentation_converters() -> None:
    """Register the labelmap <-> surface conversion rules (Slicer's Segmentations module does it at start-up;
    a bare MRML core, as in tests, has none and cannot even create an empty labelmap segment)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) == 0:
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
        factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


def lps_points_to_ras(points: np.ndarray | list) -> np.ndarray:
    """LPS points ``(..., 3)`` to RAS (flip x and y)."""
    pts = np.array(points, dtype=float)
    pts[..., :2] *= -1.0
    return pts


def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_world_ras(volume_node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """IJK -> world RAS of a volume node, its linear parent transforms included.

    Raises ``InputError`` for a non-linear (e.g. grid) transform: the core needs a regular grid, so such a
    transform must be hardened (resampled) by the user first.
    """
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    matrix = _matrix_to_array(ijk_to_ras)
    transform_node = volume_node.GetParentTransformNode()
    if transform_node is not None:
        if not transform_node.IsTransformToWorldLinear():
            raise InputError(
                f"Volume '{volume_node.GetName()}' is under a non-linear transform "
                f"('{transform_node.GetName()}'): "
                "harden it first (Data module: right-click > Harden transform)."
            )
        to_world = vtk.vtkMatrix4x4()
        transform_node.GetMatrixTransformToWorld(to_world)
        matrix = _matrix_to_array(to_world) @ matrix
    return matrix


@dataclass(frozen=True)
class NodeGrid:
    """How the core's grid (k = the axis closest to superior-inferior) sits in a volume node's IJK array.

    ``perm[a]`` is the node IJK axis (0 i, 1 j, 2 k) that core axis ``a`` is; arrays are ``[k, j, i]``.
    Axial volumes (the usual case) have the identity.
    """

    perm: tuple[int, int, int] = (0, 1, 2)

    def to_core(self, node_array: np.ndarray) -> np.ndarray:
        """A ``[k, j, i]`` array in node order to core order."""
        return np.ascontiguousarray(node_array.transpose(2, 1, 0).transpose(self.perm).transpose(2, 1, 0))

    def to_node(self, core_array: np.ndarray) -> np.ndarray:
        """A ``[k, j, i]`` array in core order back to node order."""
        inverse = tuple(int(a) for a in np.argsort(self.perm))
        return np.ascontiguousarray(core_array.transpose(2, 1, 0).transpose(inverse).transpose(2, 1, 0))


def axial_grid(affine_lps: np.ndarray) -> NodeGrid:
    """The core readers' axis order: k closest to superior-inferior, then i closest to left-right."""
    directions = affine_lps[:3, :3] / np.linalg.norm(affine_lps[:3, :3], axis=0)
    k_axis = int(np.argmax(np.abs(directions[2])))
    others = sorted((a for a in range(3) if a != k_axis), key=lambda a: -abs(directions[0, a]))
    return NodeGrid((others[0], others[1], k_axis))


def volume_node_to_ct(volume_node: slicer.vtkMRMLScalarVolumeNode) -> tuple[CTVolume, NodeGrid]:
    """A scalar volume node (HU) as a core ``CTVolume`` (array copied, geometry in world LPS, axial k),
    and the ``NodeGrid`` that maps core arrays back onto the node's array."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise InputError("No input volume, or the volume has no image data.")
    if (
        volume_node.IsA("vtkMRMLLabelMapVolumeNode")
        or volume_node.GetImageData().GetNumberOfScalarComponents() != 1
    ):
        raise InputError(f"'{volume_node.GetName()}' is not a single-channel CT volume.")
    array = slicer.util.arrayFromVolume(volume_node)
    if min(array.shape) < 2:
        raise InputError(
            f"'{volume_node.GetName()}' is a single 2D image (shape {array.shape}), not a CT volume."
        )
    node_affine = ras_to_lps(ijk_to_world_ras(volume_node))
    if abs(np.linalg.det(node_affine[:3, :3])) < 1e-9:
        raise InputError(f"'{volume_node.GetName()}' has a degenerate geometry (zero voxel volume).")
    grid = axial_grid(node_affine)
    affine = np.eye(4)
    affine[:3, :3] = node_affine[:3, list(grid.perm)]
    affine[:3, 3] = node_affine[:3, 3]
    hu = grid.to_core(array)
    fits_int16 = np.issubdtype(hu.dtype, np.integer) and hu.min() >= -32768 and hu.max() <= 32767
    hu = hu.astype(np.int16 if fits_int16 else np.float32, copy=False)
    ct = CTVolume(
        hu=hu,
        affine=affine,
        source=f"Slicer volume '{volume_node.GetName()}'",
        series_uid=dicom_series_uid(volume_node),
    )
    return ct, grid


def write_temporary_nrrd(path: str | os.PathLike, ct: CTVolume) -> None:
    """Write ``ct`` as an uncompressed NRRD (LPS, exact affine) for the background process to read.

    Raw rather than gzip: a 512x512x40 CT takes ~0.1 s instead of ~10 s, and the file is deleted afterwards.
    """
    import nrrd

    header = {
        "space": "left-posterior-superior",
        "space directions": np.asarray(ct.affine, dtype=float)[:3, :3].T,
        "space origin": np.asarray(ct.affine, dtype=float)[:3, 3],
        "kinds": ["domain", "domain", "domain"],
        "encoding": "raw",
    }
    nrrd.write(str(path), np.ascontiguousarray(ct.hu.transpose(2, 1, 0)), header, index_order="F")


def dicom_series_uid(volume_node: slicer.vtkMRMLScalarVolumeNode) -> str | None:
    """DICOM Series Instance UID of a volume loaded by the DICOM module (subject hierarchy), if any."""
    scene = volume_node.GetScene()
    if scene is None:
        return None
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return None
    item = hierarchy.GetItemByDataNode(volume_node)
    uid = hierarchy.GetItemUID(item, "DICOM") if item else ""
    return uid or None


def label_digest(labels: np.ndarray) -> str:
    """Fingerprint of a label map (shape and voxels), to tell edited segmentations from model output."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    h = hashlib.sha256(str(labels.shape).encode())
    h.update(labels.tobytes())
    return h.hexdigest()


def subtype_terminology(subtype: Subtype) -> str:
    """Serialized Slicer terminology entry: SNOMED CT Hemorrhage in the subtype's anatomic region."""
    cat_scheme, cat_value, cat_meaning = HEMORRHAGE_CATEGORY
    type_scheme, type_value, type_meaning = HEMORRHAGE_TYPE
    reg_scheme, reg_value, reg_meaning = subtype.region_code
    return slicer.vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry(
        TERMINOLOGY_CONTEXT,
        cat_value,
        cat_scheme,
        cat_meaning,
        type_value,
        type_scheme,
        type_meaning,
        "",
        "",
        "",
        ANATOMIC_CONTEXT,
        reg_value,
        reg_scheme,
        reg_meaning,
        "",
        "",
        "",
    )


def segment_terminology(segment: slicer.vtkSegment) -> str:
    """The serialized terminology entry stored on a segment ("" when none)."""
    value = vtk.reference("")
    segment.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), value)
    return str(value)


def _oriented_mask(mask: np.ndarray, ijk_to_ras: np.ndarray) -> slicer.vtkOrientedImageData:
    """A ``[k, j, i]`` binary mask as a vtkOrientedImageData with the given IJK -> RAS geometry."""
    nk, nj, ni = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(ni, nj, nk)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(nk, nj, ni)[:] = mask
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    return image


def labels_to_segmentation(
    labels: np.ndarray,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
) -> list[str]:
    """Replace the segments of ``segmentation_node`` with one segment per subtype present in ``labels``.

    ``labels`` is ``[k, j, i]`` on the grid of ``volume_node``. The segmentation takes the volume's
    geometry and parent transform; segment IDs are the subtype keys (IPH, ...), names, colors and
    terminology come from ``constants.SUBTYPES``. Returns the IDs of the segments created.
    """
    ensure_segmentation_converters()
    expected = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    if labels.shape != expected:
        raise InputError(f"Label map shape {labels.shape} does not match the volume {expected}.")
    segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    segmentation = segmentation_node.GetSegmentation()
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    ijk_to_ras_array = _matrix_to_array(ijk_to_ras)
    created = []
    was_modifying = segmentation_node.StartModify()
    try:
        segmentation.RemoveAllSegments()
        for subtype in SUBTYPES:
            mask = labels == subtype.label
            if not mask.any():
                continue
            segmentation.AddEmptySegment(subtype.key, subtype.name, list(subtype.color))
            segment = segmentation.GetSegment(subtype.key)
            segment.SetNameAutoGenerated(False)
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), subtype_terminology(subtype))
            ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                _oriented_mask(mask.astype(np.uint8), ijk_to_ras_array),
                segmentation_node,
                subtype.key,
                slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
            )
            if not ok:
                raise InputError(
                    f"Could not store the {subtype.key} segment in '{segmentation_node.GetName()}'."
                )
            created.append(subtype.key)
        segmentation.CollapseBinaryLabelmaps(False)  # no overlap: one shared layer
    finally:
        segmentation_node.EndModify(was_modifying)
    display = segmentation_node.GetDisplayNode()
    if display is None:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    display.SetVisibility2DFill(True)
    display.SetVisibility2DOutline(True)
    return created


def set_segment_mask(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segment_id: str,
    mask: np.ndarray,
) -> None:
    """Replace one segment's voxels with a ``[k, j, i]`` mask on the volume node's grid (scripted edits)."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_ras)
    image = _oriented_mask(np.asarray(mask, dtype=np.uint8), _matrix_to_array(ijk_to_ras))
    ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        image, segmentation_node, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    )
    if not ok:
        raise InputError(f"Could not update segment {segment_id} of '{segmentation_node.GetName()}'.")


def segment_subtype(segment: slicer.vtkSegment, segment_id: str) -> Subtype | None:
    """The subtype a segment stands for: by ID (as created), else by name or key (user-made segments)."""
    if segment_id in SUBTYPE_BY_KEY:
        return SUBTYPE_BY_KEY[segment_id]
    name = (segment.GetName() or "").strip().lower()
    for subtype in SUBTYPES:
        if name in (subtype.key.lower(), subtype.name.lower()):
            return subtype
    return None


def segmentation_to_labels(
    segmentation_node: slicer.vtkMRMLSegmentationNode, volume_node: slicer.vtkMRMLScalarVolumeNode
) -> tuple[np.ndarray, list[str]]:
    """The current segments as a ``[k, j, i]`` uint8 label map on the grid of ``volume_node``.

    Segments map to labels by subtype (see ``segment_subtype``); where segments overlap, the higher label
    wins. Returns the label map and the names of segments that match no subtype (left out).
    """
    ensure_segmentation_converters()
    scene = segmentation_node.GetScene()
    shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    labels = np.zeros(shape, np.uint8)
    ignored = []
    segmentation = segmentation_node.GetSegmentation()
    by_label: dict[int, list[str]] = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        subtype = segment_subtype(segmentation.GetSegment(segment_id), segment_id)
        if subtype is None:
            ignored.append(segmentation.GetSegment(segment_id).GetName())
        else:
            by_label.setdefault(subtype.label, []).append(segment_id)
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__ichanalyzer_temp__")
    try:
        for label in sorted(by_label):
            ids = vtk.vtkStringArray()
            for segment_id in by_label[label]:
                ids.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, temp, volume_node, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
            )
            if not ok:
                raise InputError(
                    f"Could not read segment(s) {by_label[label]} of '{segmentation_node.GetName()}'."
                )
            mask = slicer.util.arrayFromVolume(temp)
            if mask.shape != shape:
                raise InputError(f"Segment export gave shape {mask.shape}, expected {shape}.")
            labels[mask > 0] = label
    finally:
        if temp.GetDisplayNode() is not None:
            scene.RemoveNode(temp.GetDisplayNode())
        scene.RemoveNode(temp)
    return labels, ignored


# ---------------------------------------------------------------- tables


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def fill_string_table(table_node: slicer.vtkMRMLTableNode, columns: list[str], rows: list[list[str]]) -> None:
    """Replace the content of a table node with string columns (display tables)."""
    table = vtk.vtkTable()
    for name in columns:
        column = vtk.vtkStringArray()
        column.SetName(name)
        column.SetNumberOfValues(len(rows))
        table.AddColumn(column)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.GetColumn(c).SetValue(r, value)
    table_node.SetAndObserveTable(table)
    table_node.SetUseColumnTitleAsColumnHeader(True)
    table_node.SetLocked(True)


def table_rows(table_node: slicer.vtkMRMLTableNode) -> list[dict[str, str]]:
    """A table node's rows as dicts of strings (column name -> cell), for checks and export."""
    table = table_node.GetTable()
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    return [
        {name: table.GetValue(r, c).ToString() for c, name in enumerate(names)}
        for r in range(table.GetNumberOfRows())
    ]


DETECTION_COLUMNS = ["Finding", "Probability"]


def fill_detection_table(table_node: slicer.vtkMRMLTableNode, report: dict) -> None:
    """Scan-level probabilities (any, IPH, ..., EDH); blank with the reason when there is no model."""
    detection = report.get("detection") or {}
    rows = []
    for key in ("any", *(s.key for s in SUBTYPES)):
        label = "Any hemorrhage" if key == "any" else f"{SUBTYPE_BY_KEY[key].name} ({key})"
        rows.append([label, _fmt(detection.get(key), 3)])
    if detection.get("reason"):
        rows.append(["Note", str(detection["reason"])])
    warning = ventricle_prior_warning(report)
    if warning:
        rows.append(["Note", warning])
    fill_string_table(table_node, DETECTION_COLUMNS, rows)


VOLUME_COLUMNS = [
    "Subtype",
    "Voxel volume (mL)",
    "Model volume (mL)",
    "ABC/2 (mL)",
    "Difference (%)",
    "A (mm)",
    "B (mm)",
    "C (mm)",
    "Max thickness (mm)",
    "Location",
    "Flag",
]
MIDLINE_LINE_NAME = "Midline shift"
MIDLINE_LINE_KEY = "midline"
MIDLINE_LINE_COLOR = (1.0, 0.85, 0.0)


def subtype_location(key: str, volumes: dict, clinical: dict | None) -> str:
    """Region and side of the largest hematoma of a subtype (``clinical["location"]``), "-" with the reason
    when the location was not determined, "" without clinical measures or hematomas."""
    hematomas = (volumes.get(key) or {}).get("hematomas") or []
    if not clinical or not hematomas:
        return ""
    location = clinical.get("location")
    if location is None:
        return f"- ({clinical.get('location_reason') or 'location not determined'})"
    largest = max(hematomas, key=lambda h: h["voxel_count"])
    for entry in location.get("hematomas") or []:
        if entry["subtype"] == key and entry["id"] == largest["id"]:
            return ", ".join(str(part) for part in (entry.get("region"), entry.get("side")) if part)
    return "- (largest hematoma not located)"


def volume_rows(
    volumes: dict, model_volumes: dict | None = None, clinical: dict | None = None
) -> list[list[str]]:
    """Rows of the volumes table: one per subtype found (in either), then the total.

    ``model_volumes`` (the model's own result) is shown beside the current (possibly edited) volumes;
    ``clinical`` (the report's section) gives the location of each subtype's largest hematoma.
    """
    model_volumes = model_volumes or volumes
    rows = []
    for key in [s.key for s in SUBTYPES] + ["total"]:
        entry = volumes.get(key) or {}
        model_entry = model_volumes.get(key) or {}
        if key != "total" and not (entry.get("voxel_count") or model_entry.get("voxel_count")):
            continue
        abc2 = entry.get("abc2") or {}
        diff = entry.get("abc2_difference_pct")
        flags = []
        if diff is not None and abs(diff) > ABC2_DISAGREEMENT_PCT:
            flags.append(f"ABC/2 differs by more than {ABC2_DISAGREEMENT_PCT:.0f}%")
        if entry.get("voxel_count") and entry.get("abc2_clinically_applicable") is False:
            flags.append("ABC/2 not applicable to this subtype" if key != "total" else "ABC/2 not applicable")
        extra_axial = key in SUBTYPE_BY_KEY and SUBTYPE_BY_KEY[key].extra_axial
        rows.append(
            [
                "Total" if key == "total" else key,
                _fmt(entry.get("volume_ml"), 2),
                _fmt(model_entry.get("volume_ml"), 2),
                _fmt(entry.get("abc2_ml"), 2),
                _fmt(diff, 1),
                _fmt(abc2.get("A_mm")),
                _fmt(abc2.get("B_mm")),
                _fmt(abc2.get("C_mm")),
                _fmt(entry.get("max_thickness_mm")) if extra_axial else "",
                "" if key == "total" else subtype_location(key, volumes, clinical),
                "; ".join(flags),
            ]
        )
    return rows


def fill_volumes_table(
    table_node: slicer.vtkMRMLTableNode,
    volumes: dict,
    model_volumes: dict | None = None,
    clinical: dict | None = None,
) -> None:
    """Volumes table: subtype, voxel and model volume, ABC/2, difference, A, B, C, thickness, location,
    flag."""
    fill_string_table(table_node, VOLUME_COLUMNS, volume_rows(volumes, model_volumes, clinical))


def clinical_summary(report: dict) -> str:
    """Midline shift and ICH score of a report as panel text (what is missing or unreliable said)."""
    clinical = report.get("clinical")
    if not clinical:
        return "Midline shift, ICH score: not measured (no hemorrhage labels)."
    shift = clinical.get("midline_shift") or {}
    if shift.get("shift_mm") is None:
        shift_text = f"Midline shift: not measured ({shift.get('note') or 'no reason given'})"
    else:
        shift_text = f"Midline shift: {shift['shift_mm']:.1f} mm"
        if shift.get("direction") and shift["direction"] != "none":
            shift_text += f" {shift['direction']}"
        shift_text += " (reliable)" if shift.get("reliable") else f" (not reliable: {shift.get('note')})"
    score = clinical.get("ich_score") or {}
    if score.get("score") is not None:
        score_text = f"ICH score: {score['score']} (GCS {score.get('gcs')}, age {score.get('age')})"
    else:
        score_text = f"ICH score: incomplete, missing {', '.join(score.get('missing') or ['?'])}"
    if score.get("note"):
        score_text += f" ({score['note']})"
    return f"{shift_text}\n{score_text}"


def fill_slice_table(table_node: slicer.vtkMRMLTableNode, report: dict) -> list[str]:
    """Per-slice probabilities as numeric columns (slice index, z, any, IPH, ...); returns the probability
    columns that have values (no model: none)."""
    slices = report.get("slices") or []
    keys = ("any", *(s.key for s in SUBTYPES))
    table = vtk.vtkTable()
    columns = {"slice": [float(s["index"]) for s in slices], "z_mm": [float(s["z_mm"]) for s in slices]}
    present = []
    for key in keys:
        values = [(s.get("probabilities") or {}).get(key) for s in slices]
        if any(v is not None for v in values):
            present.append(key)
        columns[key] = [np.nan if v is None else float(v) for v in values]
    for name, values in columns.items():
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        for v in values:
            array.InsertNextValue(v)
        table.AddColumn(array)
    table_node.SetAndObserveTable(table)
    table_node.SetLocked(True)
    return present


def fill_slice_plot(
    scene: slicer.vtkMRMLScene,
    chart_node: slicer.vtkMRMLPlotChartNode,
    table_node: slicer.vtkMRMLTableNode,
    keys: list[str],
) -> list[slicer.vtkMRMLPlotSeriesNode]:
    """One line series per probability column of the slice table, in the subtype colors."""
    for index in reversed(range(chart_node.GetNumberOfPlotSeriesNodes())):
        old = chart_node.GetNthPlotSeriesNode(index)
        chart_node.RemoveNthPlotSeriesNodeID(index)
        if old is not None and old.GetAttribute("ICHAnalyzer.Result"):
            scene.RemoveNode(old)
    series_nodes = []
    for key in keys:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{chart_node.GetName()} {key}")
        series.SetAttribute("ICHAnalyzer.Result", "1")
        series.SetAndObserveTableNodeID(table_node.GetID())
        series.SetXColumnName("slice")
        series.SetYColumnName(key)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetColor(*(SUBTYPE_BY_KEY[key].color if key in SUBTYPE_BY_KEY else (0.1, 0.1, 0.1)))
        chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series_nodes.append(series)
    chart_node.SetTitle("Hemorrhage probability per slice")
    chart_node.SetXAxisTitle("Slice index")
    chart_node.SetYAxisTitle("Probability")
    chart_node.SetYAxisRange(0.0, 1.0)
    chart_node.SetYAxisRangeAuto(False)
    return series_nodes


# ---------------------------------------------------------------- ABC/2 lines


def measurement_line_specs(volumes: dict, clinical: dict | None = None) -> list[tuple[str, str, np.ndarray]]:
    """``(name, subtype key, 2x3 RAS endpoints)`` of the lines to show: the ABC/2 diameters A and B of every
    subtype that has them, the maximum thickness of SDH and EDH, and the midline shift (septum point to
    ideal midline, key ``MIDLINE_LINE_KEY``) when ``clinical`` measured it."""
    specs = []
    shift_endpoints = ((clinical or {}).get("midline_shift") or {}).get("line_endpoints")
    if shift_endpoints:
        specs.append((MIDLINE_LINE_NAME, MIDLINE_LINE_KEY, lps_points_to_ras(shift_endpoints)))
    for subtype in SUBTYPES:
        entry = volumes.get(subtype.key) or {}
        abc2 = entry.get("abc2") or {}
        for axis in ("A", "B"):
            endpoints = abc2.get(f"{axis}_endpoints")
            if endpoints:
                specs.append((f"{subtype.key} {axis}", subtype.key, lps_points_to_ras(endpoints)))
        if subtype.extra_axial and entry.get("thickness_endpoints"):
            specs.append(
                (f"{subtype.key} thickness", subtype.key, lps_points_to_ras(entry["thickness_endpoints"]))
            )
    return specs


def update_line_node(
    scene: slicer.vtkMRMLScene,
    line_node: slicer.vtkMRMLMarkupsLineNode | None,
    name: str,
    key: str,
    endpoints_ras: np.ndarray,
) -> slicer.vtkMRMLMarkupsLineNode:
    """Create or move a locked line markup between two RAS points (world coordinates)."""
    if line_node is None:
        line_node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
        line_node.CreateDefaultDisplayNodes()
        line_node.SetAttribute("ICHAnalyzer.Result", "1")
    line_node.SetName(name)
    line_node.SetAttribute("ICHAnalyzer.Subtype", key)
    was_modifying = line_node.StartModify()
    line_node.RemoveAllControlPoints()
    for point in endpoints_ras:
        line_node.AddControlPoint(vtk.vtkVector3d(*[float(x) for x in point]))
    line_node.SetLocked(True)
    line_node.EndModify(was_modifying)
    display = line_node.GetDisplayNode()
    if display is not None:
        color = SUBTYPE_BY_KEY[key].color if key in SUBTYPE_BY_KEY else MIDLINE_LINE_COLOR
        display.SetSelectedColor(*color)
        display.SetColor(*color)
    return line_node


def slice_center_ras(ct: CTVolume, k: float) -> np.ndarray:
    """World RAS position of the centre of grid slice ``k`` (for jumping slice views)."""
    nk, nj, ni = ct.shape
    lps = ct.voxel_to_lps([(ni - 1) / 2.0, (nj - 1) / 2.0, float(k)])[0]
    return lps_points_to_ras(lps)


# ---------------------------------------------------------------- follow-up comparison

COMPARISON_COLUMNS = ["Subtype", "Baseline (mL)", "Follow-up (mL)", "Change (mL)", "Change (%)"]


def fill_comparison_table(table_node: slicer.vtkMRMLTableNode, comparison: dict) -> None:
    """Change table of a follow-up comparison (``compare.compare_results``): one row per subtype, total."""
    rows = [
        [
            "Total" if row["subtype"] == "total" else row["subtype"],
            _fmt(row["baseline_ml"], 2),
            _fmt(row["followup_ml"], 2),
            _fmt(row["change_ml"], 2),
            _fmt(row["change_pct"], 1) if row["change_pct"] is not None else "-",
        ]
        for row in comparison["volumes"]
    ]
    fill_string_table(table_node, COMPARISON_COLUMNS, rows)


def _flag_text(flag: bool | None) -> str:
    return "undecided" if flag is None else ("YES" if flag else "no")


def expansion_summary(comparison: dict) -> str:
    """Hematoma expansion flags (classic and revised definitions) and registration quality as panel text."""
    expansion = comparison["expansion"]
    growth_pct = expansion["iph_growth_pct"]
    lines = [
        f"Expansion (classic: {expansion['definitions']['classic']}): "
        f"{_flag_text(expansion['expansion_classic'])}",
        f"Expansion (revised: {expansion['definitions']['revised']}): "
        f"{_flag_text(expansion['expansion_revised'])}",
        f"IPH {expansion['iph_growth_ml']:+.2f} mL"
        + ("" if growth_pct is None else f" ({growth_pct:+.1f} %)")
        + f", IVH {expansion['ivh_growth_ml']:+.2f} mL" + (" (new IVH)" if expansion["new_ivh"] else ""),
    ]
    registration = comparison.get("registration") or {}
    if registration:
        lines.append(f"Registration: brain overlap (Dice) {registration['brain_dice']:.2f}")
    lines += list(expansion.get("notes") or [])
    return "\n".join(lines)
