"""Prometheus exposition of the Registry, read at scrape time by a custom collector (nothing to
keep in sync): canaries (phase, weights, verdict, per-version figures, failed checks), sources
(ingest rate, lag, malformed per reason, dropped late) and Flagger-compatible gauges so existing
Flagger dashboards and alerts keep working."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canary_stream import __version__
from canary_stream.analysis.verdict import Decision
from canary_stream.api.config import ApiConfig
from canary_stream.api.views import current_verdict, finite, snapshot, target_of
from canary_stream.controller.phases import Phase
from canary_stream.registry import Registry

#: Latency quantiles exported per version (label value -> VersionStats field).
QUANTILES = (("0.5", "p50_ms"), ("0.9", "p90_ms"), ("0.99", "p99_ms"), ("0.999", "p999_ms"))
DROPPED_LATE = "dropped_late"


def flagger_status(phase: Phase | None) -> int:
    """Flagger's ``flagger_canary_status``: 0 while Progressing, 2 when Failed, 1 otherwise."""
    if phase == Phase.PROGRESSING:
        return 0
    if phase == Phase.FAILED:
        return 2
    return 1


class RegistryCollector(Collector):
    """Reads ``registry`` on every scrape."""

    def __init__(self, registry: Registry, config: ApiConfig) -> None:
        self.registry = registry
        self.config = config

    def collect(self) -> Iterator[Metric]:
        yield from self._process()
        yield from self._canaries()
        yield from self._sources()

    def _process(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("canary_stream_info", "canary-stream build", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        leader = GaugeMetricFamily("canary_stream_leader", "1 when this replica acts on Canaries")
        leader.add_metric([], 1 if self.registry.is_leader() else 0)
        yield leader

    def _canaries(self) -> Iterator[Metric]:
        cn = ["name", "namespace"]
        phase = GaugeMetricFamily(
            "canary_stream_canary_phase",
            "1 for the canary's current phase, 0 for the others",
            labels=[*cn, "phase"],
        )
        weight = GaugeMetricFamily(
            "canary_stream_canary_weight", "traffic weight in percent", labels=[*cn, "version"]
        )
        verdict = GaugeMetricFamily(
            "canary_stream_canary_verdict",
            "1 for the current verdict's decision, 0 for the others (all 0: no verdict this run)",
            labels=[*cn, "decision"],
        )
        failed = GaugeMetricFamily("canary_stream_canary_failed_checks", "Flagger failed checks", labels=cn)
        paused = GaugeMetricFamily("canary_stream_canary_paused", "1 while paused by hand", labels=cn)
        statistic = GaugeMetricFamily(
            "canary_stream_verdict_test_statistic",
            "test statistic of the current verdict",
            labels=[*cn, "test"],
        )
        boundary = GaugeMetricFamily(
            "canary_stream_verdict_test_boundary", "where the test decides", labels=[*cn, "test"]
        )
        test_failed = GaugeMetricFamily(
            "canary_stream_verdict_test_failed", "1 when the test or check says fail", labels=[*cn, "test"]
        )
        v_requests = GaugeMetricFamily(
            "canary_stream_verdict_requests", "requests in the verdict's window", labels=[*cn, "version"]
        )
        v_failures = GaugeMetricFamily(
            "canary_stream_verdict_failures",
            "failed requests in the verdict's window",
            labels=[*cn, "version"],
        )
        w = self.config.metrics_window_s
        live = f"over the last {w:g}s"
        rps = GaugeMetricFamily(
            "canary_stream_version_rps", f"requests per second {live}", labels=[*cn, "version"]
        )
        requests = GaugeMetricFamily(
            "canary_stream_version_requests", f"requests {live}", labels=[*cn, "version"]
        )
        success = GaugeMetricFamily(
            "canary_stream_version_success_ratio",
            f"share of successful requests {live}",
            labels=[*cn, "version"],
        )
        latency = GaugeMetricFamily(
            "canary_stream_version_latency_seconds",
            f"latency quantiles {live}",
            labels=[*cn, "version", "quantile"],
        )
        f_status = GaugeMetricFamily(
            "flagger_canary_status", "Flagger: 0 Progressing, 2 Failed, 1 otherwise", labels=cn
        )
        f_weight = GaugeMetricFamily(
            "flagger_canary_weight", "Flagger: routing weights", labels=["workload", "namespace", "type"]
        )
        f_total = GaugeMetricFamily(
            "flagger_canary_total", "Flagger: number of canaries", labels=["namespace"]
        )
        strat = ["name", "namespace", "deployment_strategy", "analysis_status"]
        f_success = CounterMetricFamily("flagger_canary_successes", "Flagger: promotions", labels=strat)
        f_failure = CounterMetricFamily("flagger_canary_failures", "Flagger: rollbacks", labels=strat)

        per_namespace: dict[str, int] = {}
        agg = self.registry.aggregator
        now = time.time()
        for (ns, name), r in self.registry.items():
            per_namespace[ns] = per_namespace.get(ns, 0) + 1
            s = r.status
            for p in Phase:
                phase.add_metric([name, ns, p.value], 1 if s.phase == p else 0)
            weight.add_metric([name, ns, "primary"], 100 - s.canary_weight)
            weight.add_metric([name, ns, "canary"], s.canary_weight)
            failed.add_metric([name, ns], s.failed_checks)
            paused.add_metric([name, ns], 1 if r.paused else 0)
            v = current_verdict(r, self.config.verdict_max_age_s, now)
            for d in Decision:
                verdict.add_metric([name, ns, d.value], 1 if v is not None and v.decision == d else 0)
            if v is not None:
                for t in v.tests:
                    if (x := finite(t.statistic)) is not None:
                        statistic.add_metric([name, ns, t.name], x)
                    if (b := finite(t.boundary)) is not None:
                        boundary.add_metric([name, ns, t.name], b)
                    test_failed.add_metric([name, ns, t.name], 1 if t.decision == Decision.FAIL else 0)
                for f in v.versions:
                    v_requests.add_metric([name, ns, f.version], f.requests)
                    v_failures.add_metric([name, ns, f.version], f.failures)
            for vs in snapshot(agg, target_of(r), w):
                labels = [name, ns, vs.version]
                rps.add_metric(labels, finite(vs.rps) or 0.0)
                requests.add_metric(labels, vs.requests)
                if (sr := finite(vs.success_rate)) is not None:
                    success.add_metric(labels, sr / 100.0)
                for q, attr in QUANTILES:
                    if (ms := finite(getattr(vs, attr))) is not None:
                        latency.add_metric([*labels, q], ms / 1000.0)
            # Flagger labels by the target's name, not the Canary's.
            target = r.canary.spec.target_ref.name
            f_status.add_metric([target, ns], flagger_status(s.phase))
            f_weight.add_metric([f"{target}-primary", ns, "primary"], 100 - s.canary_weight)
            f_weight.add_metric([target, ns, "canary"], s.canary_weight)
            strategy = r.strategy.value
            wins = sum(1 for _, p in r.transitions if p == Phase.SUCCEEDED)
            losses = sum(1 for _, p in r.transitions if p == Phase.FAILED)
            f_success.add_metric([target, ns, strategy, "completed"], wins)
            f_failure.add_metric([target, ns, strategy, "completed"], losses)
        for ns, n in sorted(per_namespace.items()):
            f_total.add_metric([ns], n)
        yield from (phase, weight, verdict, failed, paused, statistic, boundary, test_failed)
        yield from (v_requests, v_failures, rps, requests, success, latency)
        yield from (f_status, f_weight, f_total, f_success, f_failure)

    def _sources(self) -> Iterator[Metric]:
        src = ["source"]
        events = CounterMetricFamily("canary_stream_source_events", "lines accepted by the core", labels=src)
        lines = CounterMetricFamily("canary_stream_source_lines", "lines seen by the core", labels=src)
        bytes_ = CounterMetricFamily("canary_stream_source_bytes", "bytes ingested", labels=src)
        rate = GaugeMetricFamily(
            "canary_stream_source_events_per_second", "accepted lines per second since the start", labels=src
        )
        lag = GaugeMetricFamily(
            "canary_stream_source_lag", "Kafka: records behind; files: bytes not read yet", labels=src
        )
        waits = CounterMetricFamily(
            "canary_stream_source_backpressure_waits", "times the source waited for the core", labels=src
        )
        malformed = CounterMetricFamily(
            "canary_stream_source_malformed", "lines skipped, by reason", labels=[*src, "reason"]
        )
        late = CounterMetricFamily(
            "canary_stream_source_dropped_late", "lines older than the allowed lateness", labels=src
        )
        for s in self.registry.sources:
            st = s.stats
            events.add_metric([st.name], st.events)
            lines.add_metric([st.name], st.lines)
            bytes_.add_metric([st.name], st.bytes)
            rate.add_metric([st.name], finite(st.rates()["events_per_s"]) or 0.0)
            if st.lag is not None:
                lag.add_metric([st.name], st.lag)
            waits.add_metric([st.name], st.waits)
            for reason, n in sorted(st.malformed.items()):
                if reason != DROPPED_LATE:
                    malformed.add_metric([st.name, reason], n)
            late.add_metric([st.name], st.malformed.get(DROPPED_LATE, 0))
        yield from (events, lines, bytes_, rate, lag, waits, malformed, late)
        agg = self.registry.aggregator
        if agg is None:
            return
        t = agg.totals()
        a_lines = CounterMetricFamily("canary_stream_aggregator_lines", "lines read by the core")
        a_lines.add_metric([], t.lines)
        a_acc = CounterMetricFamily("canary_stream_aggregator_accepted", "lines folded into windows")
        a_acc.add_metric([], t.accepted)
        a_bad = CounterMetricFamily(
            "canary_stream_aggregator_malformed", "lines skipped by the core, by reason", labels=["reason"]
        )
        for reason, n in sorted({**t.malformed, **t.skipped}.items()):
            a_bad.add_metric([reason], n)
        yield from (a_lines, a_acc, a_bad)
        wm = agg.watermark_ms
        if wm is not None:
            a_wm = GaugeMetricFamily(
                "canary_stream_aggregator_watermark_seconds", "newest event time seen (epoch seconds)"
            )
            a_wm.add_metric([], wm / 1000.0)
            yield a_wm
            delay = GaugeMetricFamily(
                "canary_stream_aggregator_event_delay_seconds", "wall clock minus the newest event time"
            )
            delay.add_metric([], max(0.0, time.time() - wm / 1000.0))
            yield delay


def metrics_registry(registry: Registry, config: ApiConfig) -> CollectorRegistry:
    """A CollectorRegistry of its own (not the process-global one) holding the collector."""
    out = CollectorRegistry(auto_describe=False)
    out.register(RegistryCollector(registry, config))
    return out
