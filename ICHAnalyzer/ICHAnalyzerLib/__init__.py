"""ICHAnalyzer core: intracranial hemorrhage detection, segmentation and volumetry on head CT.

Pure Python (numpy, SimpleITK, torch, MONAI); never imports Slicer.
"""

__version__ = "0.1.0"
