"""How the gateway marks the DICOM objects it writes, so that it never classifies them.

PACS often route every new object of a study onward, including the SR and
the heatmap Secondary Capture the gateway just sent. The SR and Secondary
Capture builders set these values; :func:`inference.quality.check_quality`
recognises them. General Equipment Module Manufacturer (0008,0070) is the
primary mark (PS3.3 C.7.5.1): a PACS that rewrites Series Description
(0008,103E) on ingest still keeps it.
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

GATEWAY_MANUFACTURER: Final = "CXR Gateway"
"""Manufacturer (0008,0070) of every object the gateway writes."""

SR_SERIES_DESCRIPTION: Final = "CXR Gateway AI result"
"""Series Description (0008,103E) of the Structured Report series."""

HEATMAP_SERIES_DESCRIPTION: Final = "CXR Gateway AI heatmap"
"""Series Description (0008,103E) of the heatmap Secondary Capture series."""

GATEWAY_SERIES_DESCRIPTIONS: Final = frozenset({SR_SERIES_DESCRIPTION, HEATMAP_SERIES_DESCRIPTION})


def gateway_mark(ds: Dataset) -> str | None:
    """Which attribute marks ``ds`` as written by the gateway, or ``None``."""
    manufacturer = str(ds.get("Manufacturer", "") or "").strip()
    if manufacturer.casefold() == GATEWAY_MANUFACTURER.casefold():
        return f"Manufacturer {manufacturer!r}"
    description = str(ds.get("SeriesDescription", "") or "").strip()
    if description.casefold() in {d.casefold() for d in GATEWAY_SERIES_DESCRIPTIONS}:
        return f"Series Description {description!r}"
    return None
