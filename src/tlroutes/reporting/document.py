"""The report as plain data: sections of blocks that the HTML and the Markdown writers both render.

Building the content once and rendering it twice keeps ``report.html`` and ``report.md`` saying
the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    """A table cell: its text, an optional style (``"good"``, ``"bad"``, ``"strong"``,
    ``"muted"``) and an optional link (a relative path)."""

    text: str
    style: str = ""
    href: str = ""


@dataclass
class Text:
    """A paragraph. ``**bold**`` and ``code`` spans (backticks) are kept in both formats."""

    text: str


@dataclass
class Notice:
    """A boxed message: ``level`` ``"warn"`` (unfinished, missing) or ``"info"``."""

    text: str
    level: str = "warn"


@dataclass
class Table:
    """A table; rows hold strings or :class:`Cell`. ``id`` is the HTML element's id."""

    columns: list[str]
    rows: list[list[str | Cell]]
    id: str = ""
    caption: str = ""


@dataclass
class Image:
    """A PNG picture. ``name`` is its file name next to ``report.md`` (under report_files/)."""

    name: str
    png: bytes
    alt: str
    id: str = ""
    width: int = 0  # display width in CSS pixels; 0 fills the column


@dataclass
class Code:
    """Preformatted text (e.g. the run file), folded away in HTML under ``summary``."""

    text: str
    summary: str = ""


Block = Text | Notice | Table | Image | Code


@dataclass
class Section:
    """A titled part of the page; ``id`` is the HTML element's id."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    """The whole report: title, a subtitle line, notices shown first, then sections."""

    title: str
    subtitle: str
    notices: list[Notice] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)

    def images(self) -> list[Image]:
        """Every picture, in page order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Image)]
