"""Evidence and plans as terminal tables (what ``tlroutes inspect`` and ``plan`` print)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from tlroutes.measure.domain import DomainEvidence
    from tlroutes.measure.evidence import Evidence
    from tlroutes.measure.task import LabelPresence

_VERDICT_STYLE = {"same": "green", "different": "yellow", "undecided": "magenta"}


def evidence_tables(evidence: Evidence) -> list[Table]:
    """One table per compared pair, then the trunk ranking when there is one."""
    tables = [_pair_table(p) for p in evidence.pairs]
    if evidence.transferability is not None:
        tables.append(_ranking_table(evidence))
    return tables


def verdict_text(text: str) -> str:
    """``text`` (a verdict: same, different, undecided) in its colour, as rich markup."""
    return f"[bold {_VERDICT_STYLE.get(text, 'white')}]{text}[/]"


def _pair_table(pair) -> Table:
    table = Table(title=f"{pair.first} vs {pair.second}", show_header=True, title_justify="left")
    table.add_column("axis")
    table.add_column("verdict")
    table.add_column("evidence", overflow="fold")
    d, t = pair.domain, pair.task
    table.add_row("domain", verdict_text(d.verdict), d.reason)
    for name, text in _domain_rows(d):
        table.add_row("", name, text)
    table.add_row("task", verdict_text(t.verdict), t.reason)
    if t.labels is not None:
        table.add_row("", "labels", t.labels.describe())
        table.add_row("", "samples per class", _counts_text(t.labels))
    else:
        table.add_row("", "labels", f"{t.label_relation}" + (
            "" if t.jaccard is None else f" (Jaccard {t.jaccard:.2f})"))
    if t.nce is not None:
        table.add_row("", "source model", f"NCE {t.nce:.3f}; matched agreement "
                      f"{t.matched_agreement:.3f}")
    return table


def _counts_text(labels: LabelPresence, limit: int = 12) -> str:
    """``label: source/target`` per declared label (the first ``limit``), so a class missing
    on one side shows as a 0."""
    names = list(dict.fromkeys([*labels.source_counts, *labels.target_counts]))
    cells = [f"{n}: {labels.source_counts.get(n, '-')}/{labels.target_counts.get(n, '-')}"
             for n in names[:limit]]
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return "source/target: " + ", ".join(cells) + more


def _domain_rows(d: DomainEvidence) -> list[tuple[str, str]]:
    rows = []
    if d.stability is not None:
        rows.append(("seeds", d.stability.describe()))
    if not d.schema.comparable:
        rows.append(("schema", "; ".join(d.schema.differences) + " — tests skipped"))
        return rows
    if d.representation:
        rows.append(("representation", str(d.representation.get("kind", d.representation))))
    if d.n:
        rows.append(("samples", ", ".join(f"{k} {v}" for k, v in d.n.items())
                     + f" ({d.matching})"))
    if d.mmd is not None:
        rows.append(("MMD", f"MMD² {d.mmd.mmd2:.4f}, p {d.mmd.p_value:.3f}"))
    if d.c2st is not None:
        rows.append(("C2ST", f"AUC {d.c2st.auc:.3f}, p {d.c2st.p_value:.3f}, proxy A-distance "
                     f"{d.c2st.proxy_a_distance:.3f}"))
    for name, control in (("null control", d.null_control),
                          ("positive control", d.positive_control)):
        if control is not None:
            rows.append((name, f"{control.description}: MMD² {control.mmd.mmd2:.4f} "
                         f"(p {control.mmd.p_value:.3f}), AUC {control.c2st.auc:.3f} "
                         f"(p {control.c2st.p_value:.3f})"))
    if d.threshold is not None:
        mmd = "-" if d.threshold.mmd2 is None else f"{d.threshold.mmd2:.4f}"
        auc = "-" if d.threshold.auc_excess is None else f"{0.5 + d.threshold.auc_excess:.3f}"
        rows.append(("thresholds", f"MMD² > {mmd}, AUC > {auc} ({d.threshold.rule})"))
    if d.label_shift is not None and d.label_shift.p_value is not None:
        rows.append(("label shift", f"χ² {d.label_shift.chi2:.1f}, p {d.label_shift.p_value:.3g}"
                     f", Cramér's V {d.label_shift.cramers_v:.3f}"))
    return rows


def _ranking_table(evidence: Evidence) -> Table:
    ranking = evidence.transferability
    table = Table(title=f"trunks ranked for '{ranking.target}': score [95% bootstrap] #rank",
                  title_justify="left")
    table.add_column("candidate")
    for score in ranking.scores:
        table.add_column(score, overflow="fold")
    for name in ranking.candidates:
        cells = []
        for by_candidate in ranking.scores.values():
            e = by_candidate.get(name)
            if e is None:
                cells.append("-")
            elif e.low is None or e.high is None:
                cells.append(f"{e.value:.3f} (no interval) #{e.rank}")
            else:
                cells.append(f"{e.value:.3f} [{e.low:.3f}, {e.high:.3f}] #{e.rank}")
        table.add_row(name, *cells)
    notes = [f"warning: {w}" for w in ranking.warnings] + [
        f"{k} skipped: {v}" for k, v in ranking.skipped.items()] + list(ranking.notes)
    table.caption = "\n".join(notes) or None
    return table
