"""The run report: one self-contained HTML page and its Markdown twin per run folder.

- :func:`build_report` writes ``report.html`` and ``report.md`` (pictures under
  ``report_files/``) for a run folder, finished or not.
- :func:`build_index` writes the demo's ``index.html``, linking every route's report.
- :func:`summary_rows` gives the one-row-per-run table content the command line prints.
"""

from tlroutes.report.build import ReportResult, build_index, build_report
from tlroutes.report.tables import SUMMARY_COLUMNS, summary_rows

__all__ = ["SUMMARY_COLUMNS", "ReportResult", "build_index", "build_report", "summary_rows"]
