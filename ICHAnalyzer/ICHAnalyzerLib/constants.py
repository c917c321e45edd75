"""Label values, names, colors and terminology shared by the core, the CLI and the Slicer module."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subtype:
    """One hemorrhage subtype and how it is shown."""

    label: int
    key: str  # short key used in reports: IPH, IVH, ...
    name: str  # human-readable name, also the segment name
    color: tuple[float, float, float]  # RGB in 0..1
    region_code: tuple[str, str, str]  # SNOMED CT anatomic region (scheme, value, meaning)
    extra_axial: bool  # SDH/EDH: thickness matters more than ABC/2


SUBTYPES: tuple[Subtype, ...] = (
    Subtype(1, "IPH", "Intraparenchymal hemorrhage", (0.85, 0.10, 0.10),
            ("SCT", "180924008", "Brain parenchyma"), False),
    Subtype(2, "IVH", "Intraventricular hemorrhage", (0.95, 0.60, 0.10),
            ("SCT", "35764002", "Ventricular system of brain"), False),
    Subtype(3, "SAH", "Subarachnoid hemorrhage", (0.95, 0.90, 0.20),
            ("SCT", "35951006", "Subarachnoid space"), False),
    Subtype(4, "SDH", "Subdural hemorrhage", (0.20, 0.45, 0.95),
            ("SCT", "71263001", "Subdural space"), True),
    Subtype(5, "EDH", "Epidural hemorrhage", (0.60, 0.20, 0.85),
            ("SCT", "1231004", "Epidural space"), True),
)

SUBTYPE_BY_KEY: dict[str, Subtype] = {s.key: s for s in SUBTYPES}
SUBTYPE_BY_LABEL: dict[int, Subtype] = {s.label: s for s in SUBTYPES}
SUBTYPE_KEYS: tuple[str, ...] = tuple(s.key for s in SUBTYPES)
# Keys of the detection probabilities, in report order.
DETECTION_KEYS: tuple[str, ...] = ("any", *SUBTYPE_KEYS)
MAX_LABEL = max(SUBTYPE_BY_LABEL)

# Property category/type of every hemorrhage segment (SNOMED CT).
HEMORRHAGE_CATEGORY = ("SCT", "49755003", "Morphologically Altered Structure")
HEMORRHAGE_TYPE = ("SCT", "50960005", "Hemorrhage")

REPORT_SCHEMA_ID = "ichanalyzer.report/1"
