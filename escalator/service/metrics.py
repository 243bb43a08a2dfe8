"""Prometheus metrics of one daemon, in its own :class:`~prometheus_client.CollectorRegistry`
(never the process-global one, so several daemons can live in one test process).

Families (served at ``GET /metrics`` by :mod:`escalator.web.routers.ops`):

- ``escalator_events_total{source,outcome}``: events the engine processed; ``outcome`` is the
  :class:`~escalator.engine.engine.IngestResult` status (``created``, ``deduplicated``, ``logged``, …).
- ``escalator_incidents_open{state}``: open incidents by state (``triggered``,
  ``acknowledged``), read from the store at scrape time.
- ``escalator_notifications_total{channel,outcome}``: delivery attempts by channel id and
  outcome (``delivered``, ``failed_retryable``, ``failed_permanent``).
- ``escalator_step_fire_lag_seconds``: histogram of how late a due step fired (now − its due
  time, seconds), observed by :meth:`escalator.engine.engine.Engine.tick`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

log = structlog.get_logger("escalator.service.metrics")

MAX_LABEL_VALUES = 200
"""Distinct values kept per label (``source``, ``channel``); further ones count as ``other``,
so a misbehaving source cannot blow up the series count."""

LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Histogram buckets of the step fire lag (seconds)."""

OPEN_STATES = ("triggered", "acknowledged")


class _OpenIncidents(Collector):
    """``escalator_incidents_open{state}``, computed from the store at each scrape."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("escalator_incidents_open", "Open incidents by state.",
                                   labels=["state"])
        try:
            with self.store.transaction() as tx:
                counts = tx.count_incidents()
        except Exception as e:  # a broken store must not break the scrape; /healthz says so
            log.warning("metrics_store_read_failed", error=f"{type(e).__name__}: {e}")
            return
        for state in OPEN_STATES:
            family.add_metric([state], counts.get(state, 0))
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("escalator_incidents_open", "Open incidents by state.",
                                  labels=["state"])]


class Metrics:
    """The metric objects of one daemon. ``store``: read at scrape time for the open-incident
    gauge (None: the gauge is not registered).

    The engine and delivery call :meth:`event`, :meth:`step_fired` and :meth:`notification`;
    :meth:`render` gives the text exposition format.
    """

    def __init__(self, store: Any = None) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("escalator_events", "Events processed, by source and outcome.",
                              ["source", "outcome"], registry=self.registry)
        self.notifications = Counter("escalator_notifications",
                                     "Delivery attempts, by channel and outcome.",
                                     ["channel", "outcome"], registry=self.registry)
        self.step_fire_lag = Histogram("escalator_step_fire_lag_seconds",
                                       "How late a due escalation step fired (seconds).",
                                       buckets=LAG_BUCKETS, registry=self.registry)
        self._seen: dict[str, set[str]] = {"source": set(), "channel": set()}
        if store is not None:
            self.registry.register(_OpenIncidents(store))

    def _bounded(self, label: str, value: str) -> str:
        seen = self._seen[label]
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return "other"
        seen.add(value)
        return value

    def event(self, source: str, outcome: str) -> None:
        """Count one processed event (``source`` as recorded, ``outcome`` = ingest status)."""
        self.events.labels(self._bounded("source", source[:100]), outcome).inc()

    def notification(self, channel: str, outcome: str, count: int = 1) -> None:
        """Count ``count`` delivery attempts through channel id ``channel`` (more than one: the
        delivery process's counts, reported to the daemon in batches)."""
        self.notifications.labels(self._bounded("channel", channel), outcome).inc(count)

    def step_fired(self, due: datetime | None, now: datetime) -> None:
        """Observe the lag of a step firing at ``now`` that was due at ``due`` (aware UTC)."""
        if due is not None:
            self.step_fire_lag.observe(max(0.0, (now - due).total_seconds()))

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format 0.0.4 (read by every Prometheus version):
        ``(body, content type)``."""
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
