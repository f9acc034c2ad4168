"""The node's journal: :mod:`storage.journal` raising the node's :class:`JournalError`.

The tables, states and every statement live in the storage layer (issue 22);
this module gives the node its journal class, whose errors are a
:class:`dicom_node.errors.PersistError` (a C-STORE that cannot be journaled
is answered 0xA700, PS3.4 B.2.3).
"""

from __future__ import annotations

from dicom_node.errors import JournalError
from storage import journal as _store
from storage.journal import (
    Admission,
    InstanceRecord,
    InstanceState,
    Job,
    NewInstance,
    StoredResult,
)

__all__ = ["Admission", "InstanceRecord", "InstanceState", "Job", "Journal", "NewInstance",
           "StoredResult"]


class Journal(_store.Journal):
    """Instances, jobs and studies; errors are :class:`dicom_node.errors.JournalError`."""

    error = JournalError
