"""The run report: one self-contained HTML page and its Markdown twin per run folder.

Two layers live here (DESIGN, "Layers only look down"):

- **Primitives, below the routes**, which a route's ``report_blocks`` uses:
  :mod:`~tlroutes.reporting.document` (the blocks), :mod:`~tlroutes.reporting.collect` (reading
  a run folder into :class:`~tlroutes.reporting.collect.RunData`),
  :mod:`~tlroutes.reporting.tables` (number formatting, :func:`summary_rows`),
  :mod:`~tlroutes.reporting.details` (the generic table of a route's details),
  :mod:`~tlroutes.reporting.plots`, :mod:`~tlroutes.reporting.html` and
  :mod:`~tlroutes.reporting.markdown`.
- **The assembly, above the routes**, which the runner and the command line call:
  :mod:`~tlroutes.reporting.sections` (the whole document, asking the route registry for the
  route's own section) and :mod:`~tlroutes.reporting.build` (:func:`build_report`,
  :func:`build_index`).

This package's own namespace holds primitives only, so that importing a primitive never imports
the assembly (and through it the routes). ``tlroutes.report(run_dir)`` is the public function.
"""

from tlroutes.reporting.tables import SUMMARY_COLUMNS, summary_rows

__all__ = ["SUMMARY_COLUMNS", "summary_rows"]
