"""Prometheus metrics: journal-derived counters and histograms, plus API instrumentation.

Everything the node did is read from the journal at scrape time
(:class:`JournalCollector`), so the numbers survive restarts and count work
done by every process sharing the journal:

* ``cxr_gateway_instances_received_total``, ``..._classified_total``,
  ``..._failed_total``, ``..._skipped_total{reason}`` (reason = quality-gate
  code of :class:`inference.quality.GateCode`);
* ``cxr_gateway_queue_depth`` (queued or being classified);
* ``cxr_gateway_studies_reported_total``;
* ``cxr_gateway_stage_seconds{stage="queue_wait"|"classification"}`` from the
  journal's timestamps;
* ``cxr_gateway_deliveries{channel, destination, state}``: outbox rows
  (pending, delivered, dead, superseded), when the outbox is wired.

Refused DICOM connections and associations are counted by the node as they
happen (:class:`RefusalCollector`): ``cxr_gateway_associations_refused_total{reason}``
(reason = :class:`dicom_node.admission.Refusal`: limit, per_host_limit,
pending_evicted, establishment_deadline, policy, tls_handshake); they start
from zero at each start.

The REST API's own work is instrumented directly:
``cxr_gateway_api_stage_seconds{stage="decode"|"inference"|"render"}``.
Both go into the :class:`~prometheus_client.CollectorRegistry` passed in. ``/metrics``
adds a ``node`` label (``storage.node_name``) to every sample (:class:`NodeLabelled`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from delivery.outbox import Outbox
from delivery.views import counts_by_destination
from dicom_node.admission import Refusals
from dicom_node.journal import InstanceState, Journal
from dicom_node.worklist import duration_buckets, reported_studies, skip_reasons
from inference.quality import GateCode

log = logging.getLogger(__name__)

STAGE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                        60.0, 300.0)

# Distinctive phrases of the quality gate's skip sentences (inference/quality.py), in the
# order they are tried; tests run every gate rule through this table.
REASON_PHRASES: Final = (
    ("outside intended use: patient aged", GateCode.AGE),
    ("written by this gateway", GateCode.GATEWAY_OUTPUT),
    ("not an image (", GateCode.NOT_IMAGE),
    ("(Modality ", GateCode.MODALITY),
    ("is not a chest radiograph class", GateCode.SOP_CLASS),
    ("not a chest radiograph (", GateCode.BODY_PART),
    ("not a frontal chest view", GateCode.VIEW),
    ("has no Pixel Data", GateCode.NO_PIXEL_DATA),
    ("image size ", GateCode.SIZE),
    ("Rows or Columns is missing", GateCode.PIXEL_FORMAT),
    ("pixel data", GateCode.PIXEL_FORMAT),
    ("header attribute cannot be read", GateCode.UNREADABLE),
    ("grey scale looks inverted", GateCode.INVERTED),
    ("do not look like a radiograph", GateCode.NOT_RADIOGRAPH),
)
OTHER_REASON: Final = "other"


def reason_code(reason: str) -> str:
    """The gate code of a recorded skip reason (a bounded label set for metrics)."""
    return next((code.value for phrase, code in REASON_PHRASES if phrase in reason), OTHER_REASON)


class JournalCollector(Collector):
    """Reads the journal on every scrape."""

    def __init__(self, journal: Journal, outbox: Outbox | None = None) -> None:
        self.journal = journal
        self.outbox = outbox

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        counts = self.journal.counts()
        yield CounterMetricFamily("cxr_gateway_instances_received", "instances received and "
                                  "journaled", value=sum(counts.values()))
        yield CounterMetricFamily("cxr_gateway_instances_classified", "instances classified",
                                  value=counts[InstanceState.CLASSIFIED])
        yield CounterMetricFamily("cxr_gateway_instances_failed", "instances given up on",
                                  value=counts[InstanceState.FAILED])
        yield self._skipped()
        yield GaugeMetricFamily("cxr_gateway_queue_depth", "instances queued or being classified",
                                value=counts[InstanceState.QUEUED] + counts[InstanceState.CLASSIFYING])
        yield CounterMetricFamily("cxr_gateway_studies_reported", "studies handed to the results "
                                  "stage", value=reported_studies(self.journal))
        yield self._stages()
        if self.outbox is not None:
            yield self._deliveries(self.outbox)

    @staticmethod
    def _deliveries(outbox: Outbox) -> GaugeMetricFamily:
        family = GaugeMetricFamily("cxr_gateway_deliveries", "outbox rows by destination and state",
                                   labels=["channel", "destination", "state"])
        for count in counts_by_destination(outbox):
            family.add_metric([count.channel, count.destination, count.state.value], count.rows)
        return family

    def _skipped(self) -> CounterMetricFamily:
        family = CounterMetricFamily("cxr_gateway_instances_skipped",
                                     "instances the quality gate skipped, by reason", labels=["reason"])
        by_code = Counter(reason_code(r) for r in skip_reasons(self.journal))
        for code in [*(c.value for c in GateCode if c is not GateCode.ACCEPTED), OTHER_REASON]:
            family.add_metric([code], by_code.get(code, 0))
        return family

    def _stages(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily("cxr_gateway_stage_seconds",
                                       "worker stage durations from the journal", labels=["stage"])
        for stage, (counts, total) in duration_buckets(self.journal, STAGE_BUCKETS).items():
            buckets = [(repr(b), float(n)) for b, n in zip(STAGE_BUCKETS, counts[:-1], strict=True)]
            family.add_metric([stage], [*buckets, ("+Inf", float(counts[-1]))], total)
        return family


class RefusalCollector(Collector):
    """The node's refusal counts, one sample per reason (zeros included)."""

    def __init__(self, refusals: Refusals) -> None:
        self.refusals = refusals

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("cxr_gateway_associations_refused",
                                     "DICOM connections or associations refused, by reason",
                                     labels=["reason"])
        for reason, count in self.refusals.counts().items():
            family.add_metric([reason.value], count)
        yield family


class NodeLabelled:
    """Every sample of ``registry`` with a ``node`` label: the node that answered the scrape
    (issue 22; journal-derived counts are of the whole shared database)."""

    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self.registry, self.node = registry, node

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            labelled = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                labelled.add_sample(s.name, {**s.labels, "node": self.node}, s.value, s.timestamp,
                                    s.exemplar)
            yield labelled


class ApiMetrics:
    """Instrumentation of the REST API's own classification path."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_seconds = Histogram("cxr_gateway_api_stage_seconds",
                                       "REST API prediction stage durations", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=registry)

    @contextmanager
    def timer(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage).observe(time.perf_counter() - start)
