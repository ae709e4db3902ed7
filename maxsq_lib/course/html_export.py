"""A rendered copy of the executed course, to read in a browser without running anything.

:func:`export_html` turns executed notebooks (``<runs>/<profile>/notebooks/*.ipynb``) into one
HTML page each with nbconvert's :class:`~nbconvert.HTMLExporter`, plus an ``index.html`` that
lists them in course order with each one's title (its first markdown heading). ``maxsq course``
calls it after the notebooks ran, into ``<runs>/<profile>/html/``.

Figures are inside the pages (the notebooks' outputs are embedded PNGs), so a page can be copied
or mailed on its own. Equations are typeset by MathJax, which the page loads from its CDN: opened
offline, a page shows them as TeX source.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from ..files import write_text_atomic

INDEX_NAME = "index.html"
"""File name of the index page in the output folder."""

_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")
"""A Markdown ATX heading line; group 1 is its text (closing ``#`` s dropped)."""


def notebook_title(nb) -> str | None:
    """The text of the first Markdown heading in a notebook's markdown cells.

    Args:
        nb: a notebook node (:func:`nbformat.read`).
    Returns:
        the heading's text, or None if no markdown cell has a heading.
    """
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            match = _HEADING.match(line)
            if match:
                return match.group(1)
    return None


def read_notebook(path: str | os.PathLike):
    """Read an executed notebook, failing with the file's name.

    Args:
        path: an ``.ipynb`` file.
    Returns:
        the notebook node (nbformat 4).
    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable notebook (bad JSON, wrong schema); names it.
    """
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"notebook to export to HTML not found: {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and encoding errors alike
        raise ValueError(f"cannot export {path} to HTML: not a readable notebook "
                         f"({type(exc).__name__}: {exc})") from exc


def notebook_page(nb, title: str) -> str:
    """One notebook as a standalone HTML page (nbconvert's ``lab`` template).

    Args:
        nb: the notebook node.
        title: the page's ``<title>``.
    Returns:
        the HTML text.
    """
    from nbconvert import HTMLExporter

    # The template takes the page title from resources["metadata"]["name"].
    body, _resources = HTMLExporter().from_notebook_node(nb, resources={"metadata": {"name": title}})
    return body


def index_page(entries: Sequence[tuple[str, str]], heading: str) -> str:
    """The index: one link per page, in the given order, each with its notebook's title.

    Args:
        entries: ``(page file name, title)`` pairs.
        heading: the index's title and ``<h1>``.
    Returns:
        the HTML text (no dates or versions, so the same course gives the same bytes).
    """
    items = "\n".join(
        f'  <li><a href="{quote(name)}">{html.escape(Path(name).stem)}</a>: {html.escape(title)}</li>'
        for name, title in entries)
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(heading)}</title>\n"
            "<style>body { font-family: sans-serif; max-width: 52em; margin: 2em auto; "
            "line-height: 1.5; } li { margin: 0.3em 0; }</style>\n"
            f"</head>\n<body>\n<h1>{html.escape(heading)}</h1>\n<ol>\n{items}\n</ol>\n"
            "</body>\n</html>\n")


def export_html(notebook_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                heading: str = "maxsq course: the executed notebooks") -> list[Path]:
    """Export executed notebooks to HTML pages and write an index of them.

    Every notebook is read before anything is written, so an unreadable one leaves the folder
    as it was; each file is written atomically (a temporary file, then a rename).

    Args:
        notebook_paths: ``.ipynb`` files in course order; page ``<stem>.html`` for each.
        out_dir: output folder (created).
        heading: title of the index page.
    Returns:
        the written files: the pages in the given order, then ``index.html``.
    Raises:
        FileNotFoundError, ValueError: a notebook is missing or unreadable (the message names it).
    """
    out_dir = Path(out_dir)
    paths = [Path(p) for p in notebook_paths]
    notebooks = [read_notebook(p) for p in paths]
    written, entries = [], []
    for path, nb in zip(paths, notebooks):
        title = notebook_title(nb) or path.stem
        page = out_dir / f"{path.stem}.html"
        written.append(write_text_atomic(page, notebook_page(nb, title)))
        entries.append((page.name, title))
    written.append(write_text_atomic(out_dir / INDEX_NAME, index_page(entries, heading)))
    return written
