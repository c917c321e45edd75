"""Slicer side of ICHAnalyzer: MRML <-> core conversions, result nodes, background runs.

Imports ``slicer`` (MRML core) and ``vtk`` but never ``qt``, so it runs headless (slicer-core) in tests.
All science lives in ``ICHAnalyzerLib``; this package only converts and displays.
"""
