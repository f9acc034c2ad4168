"""Delivery of results: the outbox (one row per result and destination), its senders and dispatcher.

:mod:`delivery.outbox` keeps the rows (SQLite, in the journal database),
:mod:`delivery.senders` knows how to hand one row to a DICOM or HL7 peer and
how to probe one, :mod:`delivery.failures` names why an attempt failed,
:mod:`delivery.dispatcher` runs one lane per destination that retries with
capped exponential backoff for the retry window until the peer acknowledges
or the row is dead-lettered, and :mod:`delivery.sink` turns a study result
into rows (the ``ResultSink`` the DICOM node's aggregator calls).
"""
