"""The generic part of a route's report section: whatever of its details no block showed.

A route's ``report_blocks`` draws what it knows how to draw (feature maps, per-task tables …)
and ends with :func:`details_blocks` for the rest, so that no route's extra facts are lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tlroutes.reporting.collect import RunData
from tlroutes.reporting.document import Block, Code, Notice, Table
from tlroutes.reporting.tables import fmt, fmt_values, seed_values

UNFINISHED = "The route's results appear here once the run finishes."


def details_blocks(run: RunData, *, shown: Iterable[str] = ()) -> list[Block]:
    """The summary's details not in ``shown``: plain values in one table, metric dicts in
    another, anything else as JSON. An unfinished run (no summary) gets a notice instead.

    Args:
        run: the run folder's content.
        shown: detail names the route's own blocks already show. Default none.
    """
    s = run.summary
    if s is None:
        return [Notice(UNFINISHED, "info")]
    skip = set(shown)
    facts, metric_rows, other = [], [], []
    for key, value in s.details.items():
        if key in skip or value is None or value in ({}, []):
            continue
        label = key.replace("_", " ")
        if isinstance(value, str | int | float | bool):
            facts.append([label, fmt(value)])
        elif isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            facts.append([label, ", ".join(fmt(v) for v in value)])
        elif isinstance(value, dict) and all(isinstance(v, int | float) for v in value.values()):
            metric_rows.append([label, ", ".join(
                f"{k} {fmt_values(seed_values(s, key, k))}" for k in value)])
        else:
            other.append(Code(json.dumps(value, indent=2, default=str), label))
    blocks: list[Block] = []
    if metric_rows:
        blocks.append(Table(["measured", "values"], metric_rows, id="route-metrics",
                            caption="Other measurements of this run (controls, references)."))
    if facts:
        blocks.append(Table(["setting or fact", "value"], facts, id="route-facts"))
    return blocks + other
