"""Prometheus metrics, written out by hand in the text exposition format (version 0.0.4).

Rules of this module (SPEC.md "Operations"):

1. Labels carry outcomes, error codes and participant ids, never case data.
2. One :class:`NodeMetrics` per node, owned by the application; no module-level registry.
3. The outbox depth is read from the database at scrape time, so it is right after a
   restart and never drifts from the queue it describes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
    return "{" + body + "}" if body else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Counter:
    name: str
    help: str
    label: str
    values: dict[str, float] = field(default_factory=dict)

    def inc(self, label_value: str, amount: float = 1.0) -> None:
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for value, count in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels([(self.label, value)])} {_number(count)}")
        return lines


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        self.observations += 1
        self.total += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f"{self.name}_bucket{_labels([('le', _number(bound))])} {count}")
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.observations}')
        lines.append(f"{self.name}_sum {_number(self.total)}")
        lines.append(f"{self.name}_count {self.observations}")
        return lines


class NodeMetrics:
    def __init__(self) -> None:
        self.messages_in = Counter("caseway_messages_in_total",
                                   "Envelopes received on the federation endpoint, by outcome "
                                   "(accepted, duplicate, or the rejection code).", "outcome")
        self.messages_out = Counter("caseway_messages_out_total",
                                    "Delivery attempts of outgoing envelopes, by outcome "
                                    "(delivered, retry, rejected, expired).", "outcome")
        self.delivery_latency = Histogram("caseway_delivery_latency_seconds",
                                          "Time from enqueue to a verified accepted receipt.")

    def render(self, outbox_depth: Mapping[str, int]) -> str:
        lines = self.messages_in.render() + self.messages_out.render()
        lines += ["# HELP caseway_outbox_depth Envelopes queued per destination.",
                  "# TYPE caseway_outbox_depth gauge"]
        for destination, depth in sorted(outbox_depth.items()):
            lines.append(f"caseway_outbox_depth{_labels([('destination', destination)])} "
                         f"{depth}")
        lines += self.delivery_latency.render()
        return "\n".join(lines) + "\n"
