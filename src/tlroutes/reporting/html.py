"""Render a :class:`~tlroutes.reporting.document.Document` as one self-contained HTML page.

Self-contained: the style sheet is inline and every picture is a base64 ``data:`` URI, so the
page opens from anywhere (an e-mail attachment, an artifact store) and fetches nothing.
"""

from __future__ import annotations

import base64
import html
import re

from tlroutes.reporting.document import Cell, Code, Document, Image, Notice, Section, Table, Text

CSS = """
:root { --ink: #1d2733; --muted: #5d6b7a; --line: #d8dee6; --accent: #1f5fa8;
        --good: #1b7a3d; --good-bg: #e8f5ec; --bad: #b3261e; --bad-bg: #fdecea;
        --warn-bg: #fff6dd; --warn: #8a5a00; --info-bg: #eef3fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f4f6f9; }
header { background: var(--ink); color: white; padding: 20px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header .subtitle { margin: 0 0 10px; color: #c9d3de; font-size: 13px; word-break: break-all; }
nav a { color: #dbe7f5; margin-right: 16px; font-size: 13px; text-decoration: none; }
nav a:hover { text-decoration: underline; }
main, #notices { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
#notices { padding-top: 16px; }
section { background: white; border: 1px solid var(--line); border-radius: 8px;
          margin: 18px 0; padding: 8px 24px 18px; }
h2 { font-size: 19px; margin: 12px 0; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
img { max-width: 100%; height: auto; display: block; margin: 10px 0; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 12px;
          padding-top: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: left;
         vertical-align: top; }
th { background: #f0f3f7; font-weight: 600; }
td.good { color: var(--good); background: var(--good-bg); font-weight: 600; }
td.bad { color: var(--bad); background: var(--bad-bg); font-weight: 600; }
td.strong { font-weight: 600; }
td:first-child { white-space: nowrap; }
td a { color: var(--accent); }
td.muted { color: var(--muted); }
.notice { border-left: 5px solid; border-radius: 4px; padding: 10px 14px; margin: 12px 0; }
.notice.warn { background: var(--warn-bg); border-color: #e0a800; color: var(--warn); }
.notice.bad { background: var(--bad-bg); border-color: var(--bad); color: var(--bad); }
.notice.good { background: var(--good-bg); border-color: var(--good); color: var(--good); }
.notice.info { background: var(--info-bg); border-color: var(--accent); }
code { background: #eef1f5; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
pre { background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; padding: 10px;
      overflow-x: auto; font-size: 12px; line-height: 1.4; max-height: 480px; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
footer { text-align: center; color: var(--muted); font-size: 12px; padding: 12px 0 24px; }
"""


def inline(text: str) -> str:
    """Escape ``text`` for HTML, then turn ``**bold**`` and backtick spans into tags."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def data_uri(png: bytes) -> str:
    """``png`` as a ``data:image/png;base64,…`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _id(value: str) -> str:
    return f' id="{html.escape(value)}"' if value else ""


def _cell(cell: str | Cell, tag: str = "td") -> str:
    if isinstance(cell, Cell):
        style = f' class="{cell.style}"' if cell.style else ""
        text = inline(cell.text)
        if cell.href:
            text = f'<a href="{html.escape(cell.href)}">{text}</a>'
        return f"<{tag}{style}>{text}</{tag}>"
    return f"<{tag}>{inline(cell)}</{tag}>"


def render_block(block: Text | Notice | Table | Image | Code) -> str:
    """One block as HTML."""
    if isinstance(block, Text):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Notice):
        return f'<div class="notice {block.level}" role="note">{inline(block.text)}</div>'
    if isinstance(block, Table):
        head = "".join(_cell(c, "th") for c in block.columns)
        body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in block.rows)
        caption = f"<caption>{inline(block.caption)}</caption>" if block.caption else ""
        return (f"<table{_id(block.id)}>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")
    if isinstance(block, Image):
        width = f' style="width:{block.width}px"' if block.width else ""
        return (f'<img{_id(block.id)} src="{data_uri(block.png)}" '
                f'alt="{html.escape(block.alt)}"{width}>')
    summary = html.escape(block.summary or "show")
    return f"<details><summary>{summary}</summary><pre>{html.escape(block.text)}</pre></details>"


def render_section(section: Section) -> str:
    """One section as HTML, its blocks in order."""
    body = "\n".join(render_block(b) for b in section.blocks)
    return f'<section{_id(section.id)}>\n<h2>{inline(section.title)}</h2>\n{body}\n</section>'


def render(doc: Document, footer: str = "") -> str:
    """The whole page. ``footer`` is a line of small text at the bottom (default none)."""
    nav = "".join(f'<a href="#{html.escape(s.id)}">{html.escape(s.title)}</a>'
                  for s in doc.sections)
    notices = "".join(render_block(n) for n in doc.notices)
    sections = "\n".join(render_section(s) for s in doc.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        # An empty icon, so that no browser asks the file system or a server for favicon.ico.
        '<link rel="icon" href="data:,">\n'
        f"<title>{html.escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f'<header id="top"><h1 id="title">{inline(doc.title)}</h1>'
        f'<p class="subtitle">{inline(doc.subtitle)}</p><nav>{nav}</nav></header>\n'
        f'<div id="notices">{notices}</div>\n<main>\n{sections}\n</main>\n'
        f"<footer>{inline(footer)}</footer>\n</body>\n</html>\n"
    )
