"""Write a run's report (``report.html`` and ``report.md``) and the demo's ``index.html``.

Part of the report assembly, above the routes (see :mod:`tlroutes.reporting`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tlroutes.reporting import html, markdown
from tlroutes.reporting.document import Cell, Document, Notice, Section, Table, Text
from tlroutes.reporting.sections import build_document, read_run
from tlroutes.reporting.tables import SUMMARY_COLUMNS, summary_rows
from tlroutes.runfolder import check_no_symlink, register_root, write_text
from tlroutes.runfolder.reads import read_summary


@dataclass
class ReportResult:
    """What :func:`build_report` wrote, and what the run folder lacked.

    Attributes:
        html: the self-contained page, ``report.html``.
        markdown: its twin, ``report.md``.
        images: the pictures ``report.md`` links (under ``report_files/``).
        missing: files a finished run folder would hold but this one lacks (e.g.
            ``"summary.json"``), each explained in the report; empty for a complete run.
        why: each missing file's explanation, as the report words it.
    """

    html: Path
    markdown: Path
    images: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        """Every file written."""
        return [self.html, self.markdown, *self.images]


def _footer() -> str:
    from tlroutes import __version__

    return f"made by tlroutes {__version__}"


def build_report(run_dir: str | Path, out: str | Path | None = None, *,
                 tsne: bool = True) -> ReportResult:
    """Write the report of the run folder ``run_dir``.

    A run that stopped before finishing (no ``summary.json``) still gets a report of what exists
    (learning curves so far, the run file) under a notice saying what is missing.

    Args:
        run_dir: the run folder (what ``tlroutes run --out`` wrote).
        out: the folder for ``report.html``, ``report.md`` and ``report_files/``. Default None:
            ``run_dir`` itself.
        tsne: draw t-SNE maps of Domain Adaptation features besides PCA. Default True (a few
            seconds per map on one core).

    Raises:
        ConfigError: ``run_dir`` is not a run folder (holds no ``run.yaml``), or its route is
            not registered.
    """
    run, module = read_run(run_dir)
    folder = Path(out) if out is not None else run.folder
    register_root(folder)  # every write below refuses a symlink planted in the folder
    doc = build_document(run, module, tsne=tsne)
    footer = _footer()
    page = folder / "report.html"
    write_text(page, html.render(doc, footer))
    # Pictures of an earlier report of this run (more stages, another name) would linger.
    pictures = folder / markdown.FILES
    check_no_symlink(pictures)
    for old in pictures.glob("*.png"):
        old.unlink()
    images = markdown.write_images(doc, folder)
    twin = folder / "report.md"
    write_text(twin, markdown.render(doc, footer))
    return ReportResult(page, twin, images, list(run.missing), dict(run.missing))


def build_index(demo_dir: str | Path, runs: list[tuple[str, Path]]) -> Path:
    """Write ``demo_dir/index.html``: the demo's table, each route linking to its report.

    Args:
        demo_dir: the demo folder; the page goes there and links are relative to it.
        runs: ``(name, run folder)`` per run, in table order. A run without ``summary.json``
            gets a row saying so; one without ``report.html`` is listed without a link.

    Returns:
        The path of ``index.html``.
    """
    demo_dir = Path(demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True)
    rows: list[list[str | Cell]] = []
    for name, folder in runs:
        folder = Path(folder)
        report = folder / "report.html"
        href = os.path.relpath(report, demo_dir).replace(os.sep, "/") if report.is_file() else ""
        summary_file = folder / "summary.json"
        if not summary_file.is_file():
            rows.append([Cell(name, "strong", href),
                         *([Cell("unfinished: no summary.json", "muted")]
                           + [""] * (len(SUMMARY_COLUMNS) - 2))])
            continue
        s = read_summary(summary_file)
        row = summary_rows([s])[0]
        cells: list[str | Cell] = [Cell(row["route"], "strong", href)]
        verdict = "" if s.gain is None else "bad" if row["negative_transfer"] else "good"
        for column in SUMMARY_COLUMNS[1:]:
            cells.append(Cell(row[column], verdict if column == "gain" else ""))
        rows.append(cells)
    doc = Document("tlroutes demo: transfer against the from-scratch baseline",
                   f"demo folder: {demo_dir}")
    doc.sections = [Section("summary", "The routes", [
        Text("One row per route, each trained on built-in data from its example run file. "
             "Click a route for its report: the cube, metrics against the baseline, learning "
             "curves and the route's own details."),
        Table(list(SUMMARY_COLUMNS), rows, id="demo-table"),
    ])]
    if not runs:
        doc.notices.append(Notice("No runs to list."))
    path = demo_dir / "index.html"
    write_text(path, html.render(doc, _footer()))
    return path
