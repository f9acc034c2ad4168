"""The results outbox (:mod:`storage.outbox`): one row per result object and destination.

The table, its states and every statement live in the storage layer (issue 22);
the delivery package sends what it holds (:mod:`delivery.dispatcher`).
"""

from __future__ import annotations

from storage.errors import OutboxError
from storage.outbox import (
    Channel,
    DeliveryPolicy,
    Kind,
    NewDelivery,
    Outbox,
    OutboxRow,
    RowState,
)

__all__ = ["Channel", "DeliveryPolicy", "Kind", "NewDelivery", "Outbox", "OutboxError", "OutboxRow",
           "RowState"]
