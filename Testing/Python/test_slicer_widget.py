"""Static checks of the Slicer module's GUI layer (qt is not available here, so it is checked, not run)."""

from __future__ import annotations

import ast
import py_compile
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "ICHAnalyzer"
MODULE_PY = MODULE_DIR / "ICHAnalyzer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "ICHAnalyzer.ui"

pytestmark = pytest.mark.slicer


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def module_source() -> str:
    return MODULE_PY.read_text()


def test_every_ui_attribute_used_exists_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", module_source()))
    assert used, "the module uses no ui widget: the pattern is broken"
    missing = sorted(used - set(ui_widgets()))
    assert missing == []


def test_parameter_names_in_ui_match_the_parameter_node():
    tree = ast.parse(module_source())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    params = classes["ICHAnalyzerParameterNode"]
    fields = {n.target.id for n in params.body if isinstance(n, ast.AnnAssign)}
    bound = set()
    for widget in ui_widgets().values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound.add(prop.find("string").text)
    assert bound and bound <= fields


def test_ui_custom_widgets_are_declared_and_signals_target_existing_widgets():
    root = ET.parse(UI_FILE).getroot()
    declared = {c.find("class").text for c in root.iter("customwidget")}
    used_classes = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used_classes if c.startswith(("q", "ctk"))}
    assert custom <= declared
    names = set(ui_widgets())
    for connection in root.iter("connection"):
        assert connection.find("sender").text in names
        assert connection.find("receiver").text in names


def test_module_and_lib_compile_on_this_python(tmp_path):
    files = [MODULE_PY, *sorted((MODULE_DIR / "ICHAnalyzerSlicerLib").glob("*.py"))]
    for path in files:
        py_compile.compile(str(path), cfile=str(tmp_path / (path.name + "c")), doraise=True)


def test_module_defines_the_slicer_classes():
    tree = ast.parse(module_source())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {"ICHAnalyzer", "ICHAnalyzerWidget", "ICHAnalyzerLogic", "ICHAnalyzerTest"} <= classes


def test_logic_methods_called_by_the_widget_exist():
    pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")
    from ICHAnalyzerSlicerLib import logic, mrml

    source = module_source()
    called = set(re.findall(r"self\.logic\.(\w+)", source)) | set(re.findall(r"\blogic\.(\w+)\(", source))
    missing = [name for name in called if not hasattr(logic.ICHAnalyzerLogic, name)
               and name not in ("getParameterNode",)]
    assert missing == []
    for name in set(re.findall(r"slicerlogic\.(\w+)", source)):
        assert hasattr(logic, name), name
    for name in set(re.findall(r"\bmrml\.(\w+)", source)):
        assert hasattr(mrml, name), name


def test_slicer_lib_imports_without_qt():
    pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")
    code = (
        "import sys; import ICHAnalyzerSlicerLib.logic, ICHAnalyzerSlicerLib.mrml, "
        "ICHAnalyzerSlicerLib.process; "
        "bad = [m for m in ('qt', 'ctk', 'slicer.app') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=MODULE_DIR, timeout=120)


def test_extension_files_are_consistent():
    top = (REPO / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in top and "add_subdirectory(ICHAnalyzer)" in top
    assert re.search(r'EXTENSION_CATEGORY\s+"Segmentation"', top)
    module_cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in module_cmake
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "ICHAnalyzer")).is_file()
    icon = (MODULE_DIR / "Resources" / "Icons" / "ICHAnalyzer.png").read_bytes()
    assert icon[:8] == b"\x89PNG\r\n\x1a\n" and len(icon) < 20_000
    assert 'categories = ["Segmentation"]' in module_source()


def gui_stand_ins() -> dict[str, object]:
    """Minimal stand-ins for the GUI-only imports of ICHAnalyzer.py (qt, ScriptedLoadableModule base classes,
    parameterNodeWrapper), which only a running Slicer application provides. MRML stays the real one."""
    import types

    qt = types.ModuleType("qt")

    class Widget:
        def __init__(self, *args, **kwargs) -> None:
            pass

    qt.QWidget = qt.QTimer = qt.QDir = Widget
    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None) -> None:
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None) -> None:
            pass

    class ScriptedLoadableModuleTest:
        def delayDisplay(self, message: str) -> None:
            print(message)

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(base, cls.__name__, cls)
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    return {"qt": qt, "slicer.ScriptedLoadableModule": base, "slicer.parameterNodeWrapper": wrapper}


def test_module_self_test_runs_on_the_real_mrml_core(monkeypatch, capsys):
    """ICHAnalyzer.py itself (module, logic class, ICHAnalyzerTest) on a real headless MRML scene."""
    slicer = pytest.importorskip("slicer", reason="slicer-core (the MRML core) is not installed")
    for name, module in gui_stand_ins().items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "ICHAnalyzer", raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    import ICHAnalyzer

    class Parent:
        pass

    module = ICHAnalyzer.ICHAnalyzer(Parent())
    assert module.parent.categories == ["Segmentation"]
    logic = ICHAnalyzer.ICHAnalyzerLogic()
    assert logic.scene is slicer.mrmlScene
    test = ICHAnalyzer.ICHAnalyzerTest()
    test.runTest()  # clears the scene, runs the phantom scenario, raises on failure
    assert "Self-test passed" in capsys.readouterr().out
    monkeypatch.delitem(sys.modules, "ICHAnalyzer", raising=False)
