"""The run report: one self-contained HTML page and its Markdown twin per run folder."""
