"""Reading an SR's content tree in tests: every content item, depth first."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset


def content_items(ds: Dataset) -> Iterator[Dataset]:
    """Every item of ``ds``'s Content Sequence and of theirs, parents before children."""
    for item in ds.get("ContentSequence", []):
        yield item
        yield from content_items(item)
