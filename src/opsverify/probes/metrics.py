"""Prometheus exposition probe (PF-03, QP-02): which series exist and what they hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from opsverify.probes.http import HttpReply, http_get, tls_verify
from opsverify.profile.model import HttpService


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape: family and sample names, largest value per sample name, or why it failed."""

    reply: HttpReply
    families: frozenset[str] = frozenset()
    samples: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def unreachable(self) -> str | None:
        return self.reply.unreachable

    def has(self, name: str) -> bool:
        """A metric is present when a family or a sample of that name was exposed."""
        return name in self.families or name in self.samples

    def value(self, name: str) -> float | None:
        """The largest value among the samples named ``name`` (over all label sets)."""
        return self.samples.get(name)


def parse_exposition(reply: HttpReply) -> MetricsSnapshot:
    """Parse exposition text with prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    families: set[str] = set()
    samples: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(reply.text):
            families.add(family.name)
            for sample in family.samples:
                samples[sample.name] = max(sample.value, samples.get(sample.name, sample.value))
    except ValueError as exc:
        return MetricsSnapshot(reply, error=f"exposition text does not parse: {exc}")
    return MetricsSnapshot(reply, frozenset(families), samples)


def probe_metrics(service: HttpService, connect_timeout: timedelta, read_timeout: timedelta) -> MetricsSnapshot:
    """Scrape the service's metrics endpoint once."""
    path = service.metrics.path if service.metrics else "/metrics"
    reply = http_get(
        service.url + path, connect_timeout=connect_timeout, read_timeout=read_timeout, verify=tls_verify(service)
    )
    if not reply.is_answered:
        return MetricsSnapshot(reply, error=reply.error)
    if not reply.is_success:
        return MetricsSnapshot(reply, error=f"HTTP {reply.status_code}")
    return parse_exposition(reply)
