"""Render a :class:`~tlroutes.reporting.document.Document` as Markdown, the HTML page's twin.

Pictures are files under ``report_files/`` next to ``report.md``, linked relatively, so the
folder can be moved or viewed on a code host as it is.
"""

from __future__ import annotations

from pathlib import Path

from tlroutes.reporting.document import Cell, Code, Document, Image, Notice, Table, Text
from tlroutes.runfolder import atomic_write

FILES = "report_files"
"""The folder, next to ``report.md``, that holds its pictures."""

_MARK = {"bad": "✗ ", "good": "✓ ", "warn": "⚠ ", "info": ""}


def _cell(cell: str | Cell) -> str:
    text = cell.text if isinstance(cell, Cell) else cell
    text = text.replace("|", "\\|").replace("\n", " ") or " "
    # Styles become emphasis: a good or bad result stays visible without colour.
    if isinstance(cell, Cell) and cell.style in ("good", "bad", "strong") and "**" not in text:
        text = f"**{text}**"
    if isinstance(cell, Cell) and cell.href:
        text = f"[{text}]({cell.href})"
    return text


def render_block(block: Text | Notice | Table | Image | Code) -> str:
    """One block as Markdown; images link to ``report_files/<name>``."""
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Notice):
        return f"> {_MARK.get(block.level, '')}{block.text}"
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_cell(c) for c in block.columns) + " |",
                 "|" + "---|" * len(block.columns)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        if block.caption:
            lines.append(f"\n*{block.caption}*")
        return "\n".join(lines)
    if isinstance(block, Image):
        return f"![{block.alt}]({FILES}/{block.name})"
    fence = "````" if "```" in block.text else "```"
    title = f"*{block.summary}*\n\n" if block.summary else ""
    return f"{title}{fence}\n{block.text.rstrip()}\n{fence}"


def render(doc: Document, footer: str = "") -> str:
    """The whole report as Markdown text."""
    parts = [f"# {doc.title}", doc.subtitle]
    parts += [render_block(n) for n in doc.notices]
    for section in doc.sections:
        parts.append(f"## {section.title}")
        parts += [render_block(b) for b in section.blocks]
    if footer:
        parts.append(f"---\n{footer}")
    return "\n\n".join(parts) + "\n"


def write_images(doc: Document, folder: Path) -> list[Path]:
    """Save every picture of ``doc`` under ``folder/report_files/``; return the paths."""
    target = folder / FILES
    paths = []
    for image in doc.images():
        path = target / image.name
        atomic_write(path, image.png)
        paths.append(path)
    return paths
