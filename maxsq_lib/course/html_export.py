"""A rendered copy of the executed course, to read in a browser without running anything.

:func:`export_html` turns executed notebooks (``<runs>/<profile>/notebooks/*.ipynb``) into HTML
pages with nbconvert's :class:`~nbconvert.HTMLExporter` (its ``lab`` template, extended here), in
two editions, each with its own ``index.html``::

    html/index.html            the full edition: the contents, in reading order
    html/<notebook>.html       one page per notebook; every solution folded in a closed <details>
    html/student/index.html    the student edition: the same pages without the solutions
    html/student/<notebook>.html

``maxsq course`` calls it after the notebooks ran, into ``<runs>/<profile>/html/``.

- **Reading order.** The pages keep the order they are given (the course's). The index groups the
  per-method copies (``04_adaptation-<method>``) and per-city copies (``06_cross_city-<City>``)
  under their chapter, each with its own title (``04 · Adaptation — MaxSquare+IW``, the label from
  :func:`maxsq_lib.methods.label`), says what each chapter teaches (its ``What you will learn``
  list and first prose paragraph, or ``metadata.maxsq.summary``) and how long it takes to read
  (``metadata.maxsq.minutes``, or an estimate from its length), and points at the first page
  ("start here"). Every page links to the previous and the next page and back to the index.
- **Solutions.** A code cell tagged ``solution`` is rendered, with its outputs, inside
  ``<details class="maxsq-solution"><summary>Solution …</summary>``, closed until the reader opens
  it; the student edition leaves the cell out and says where the full edition has it.
- **Equations** are converted at export time from TeX to MathML (``latex2mathml``), which browsers
  render natively: no MathJax, no network. An equation the converter cannot read is shown as its
  TeX source in ``<code class="maxsq-tex">``.
- **Self-contained pages.** Figures are embedded PNGs and the styles are inlined; the pages load
  no script or style sheet from elsewhere (no require.js, MathJax or widget manager from a CDN).
  An ipywidgets view is replaced by a note that it needs a live kernel (the notebooks draw a
  static snapshot beside it).
"""

from __future__ import annotations

import copy
import functools
import html
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ..files import write_text_atomic

INDEX_NAME = "index.html"
"""File name of the index page in each edition's folder."""

STUDENT_DIR = "student"
"""Sub-folder of the output folder that holds the student edition (no solutions)."""

SOLUTION_TAG = "solution"
"""Cell tag that marks an exercise's solution cell."""

WORDS_PER_MINUTE = 150
"""Reading speed of the estimate (technical prose read with care, equations included)."""

SECONDS_PER_FIGURE = 30
"""Time the estimate gives each figure (an image output) to be looked at."""

SECONDS_PER_CODE_CELL = 15
"""Time the estimate gives each code cell shown (solutions and the parameters cell excepted)."""

_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$")
"""A Markdown ATX heading line; group 1 is its text (closing ``#`` s dropped)."""

_LEARN = re.compile(r"^\*\*what you will learn:?\*\*:?\s*$", re.IGNORECASE)
"""The bold label that opens a notebook's list of what it teaches."""

_TIME = re.compile(r"^\*\*time:?\*\*:?\s*(.+)$", re.IGNORECASE | re.DOTALL)
"""The notebook's own ``**Time:** …`` paragraph; group 1 is the sentence."""

_LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(.*)$")
_SOLUTION_NAME = re.compile(r"^\s*#\s*(Solution\b[^:\n]*)")
"""A solution cell's first comment (``# Solution 2: …``); group 1 names it (``Solution 2``)."""


# ----------------------------------------------------------------------------------------------
# equations: TeX → MathML at export time
# ----------------------------------------------------------------------------------------------

_MATHML_TOKEN_FIXES = {r"\|": "&#x02016;", r"\Vert": "&#x02016;", r"\lVert": "&#x02016;",
                       r"\rVert": "&#x02016;", "&": "&amp;"}
"""Token texts latex2mathml leaves as TeX (a delimiter after ``\\big``) or unescaped, and what
they mean."""

_LEFTOVER_COMMAND = re.compile(r">\\([A-Za-z]+)<")
"""A token element whose text is still a TeX command (``<mi>\\arg</mi>``)."""

_OPERATOR_NAMES = frozenset("arg deg det dim gcd hom inf ker lg Pr sup".split())
"""TeX operator names latex2mathml leaves as commands: shown as their (upright) name."""


@functools.lru_cache(maxsize=4096)
def tex_to_mathml(tex: str, display: bool = False) -> str:
    """One equation as a MathML ``<math>`` element (``display="block"`` for display equations).

    Args:
        tex: the TeX source between the delimiters (``$…$``, ``$$…$$``, ``\\begin{…}…\\end{…}``).
        display: a display equation (its own line) rather than an inline one.
    Returns:
        the MathML text; if the converter fails, the TeX source in ``<code class="maxsq-tex">``
        with its delimiters (and a warning), so that nothing is lost.
    """
    from latex2mathml.converter import convert

    try:
        mathml = convert(tex.strip(), display="block" if display else "inline")
    except Exception as exc:  # the converter raises many kinds on TeX it does not know
        warnings.warn(f"HTML export: equation left as TeX ({type(exc).__name__}: {exc}): {tex!r}",
                      stacklevel=2)
        delim = "$$" if display else "$"
        return f'<code class="maxsq-tex">{html.escape(delim + tex + delim)}</code>'
    for token, replacement in _MATHML_TOKEN_FIXES.items():
        mathml = mathml.replace(f">{token}<", f">{replacement}<")
    unknown = sorted({m for m in _LEFTOVER_COMMAND.findall(mathml) if m not in _OPERATOR_NAMES})
    if unknown:
        warnings.warn(f"HTML export: TeX command(s) the MathML converter does not know, shown by "
                      f"name: {', '.join(unknown)} in {tex!r}", stacklevel=2)
    return _LEFTOVER_COMMAND.sub(lambda m: f">{m.group(1)}<", mathml)


def _latex_output_to_mathml(text: str) -> str:
    """A ``text/latex`` output (``$…$``, ``$$…$$`` or an environment) as MathML, else escaped."""
    body = text.strip()
    for start, end, display in (("$$", "$$", True), (r"\[", r"\]", True), ("$", "$", False),
                                (r"\(", r"\)", False)):
        if body.startswith(start) and body.endswith(end) and len(body) > len(start) + len(end):
            return tex_to_mathml(body[len(start):-len(end)], display)
    if body.startswith("\\begin{"):
        return tex_to_mathml(body, True)
    return f"<pre>{html.escape(text)}</pre>"


@functools.lru_cache(maxsize=1)
def _renderer_class():
    """nbconvert's Markdown renderer, with its math turned into MathML instead of TeX for MathJax."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer

    class MathMLRenderer(IPythonRenderer):
        def block_math(self, body: str) -> str:
            return tex_to_mathml(body, display=True)

        def inline_math(self, body: str) -> str:
            return tex_to_mathml(body, display=False)

        def latex_environment(self, name: str, body: str) -> str:
            return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

        def multiline_math(self, text: str) -> str:  # mistune 2 only: "$$…$$" as one paragraph
            return _latex_output_to_mathml(text)

    return MathMLRenderer


def markdown_to_html(source: str, **renderer_options) -> str:
    """Markdown (nbconvert's dialect, math included) to HTML, the equations as MathML.

    Args:
        source: the Markdown text.
        renderer_options: keyword arguments of nbconvert's ``IPythonRenderer`` (attachments, …).
    """
    from nbconvert.filters.markdown_mistune import MarkdownWithMath

    renderer = _renderer_class()(escape=False, **renderer_options)
    return MarkdownWithMath(renderer=renderer).render(source)


# ----------------------------------------------------------------------------------------------
# what a page is: title, chapter, what it teaches, how long it takes
# ----------------------------------------------------------------------------------------------


def notebook_title(nb) -> str | None:
    """The text of the first Markdown heading in a notebook's markdown cells.

    Args:
        nb: a notebook node (:func:`nbformat.read`).
    Returns:
        the heading's text, or None if no markdown cell has a heading.
    """
    for cell in nb.cells:
        title = notebook_title_of(cell) if cell.cell_type == "markdown" else None
        if title:
            return title
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


def is_solution(cell) -> bool:
    """Whether a cell is an exercise's solution (tagged :data:`SOLUTION_TAG`)."""
    return SOLUTION_TAG in (cell.get("metadata", {}).get("tags") or [])


def variant_label(variant: str) -> str:
    """How the index names a per-method or per-city copy: the method's label, else the name."""
    try:
        from ..methods import label
    except Exception:  # the registry needs torch; a rendered course does not
        return variant
    return label(variant)


def _maxsq_metadata(nb) -> dict:
    """The notebook's ``metadata.maxsq`` (``summary``, ``minutes``), empty if absent or malformed."""
    meta = nb.metadata.get("maxsq")
    return meta if isinstance(meta, dict) else {}


def _paragraphs(markdown: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", markdown) if p.strip()]


@dataclass
class Intro:
    """What a notebook says about itself at the top: summary, what you will learn, time."""

    summary: str | None = None
    learn: list[str] = field(default_factory=list)
    time_note: str | None = None


def notebook_intro(nb) -> Intro:
    """Read a notebook's introduction (the markdown cell of its title).

    ``summary`` is the first prose paragraph after the title (not a heading, a list, or a bold
    label such as ``**What you will learn**``); ``learn`` the items of the list under
    ``**What you will learn**``; ``time_note`` the sentence after ``**Time:**``. All are Markdown.
    """
    intro = Intro()
    first = next((c for c in nb.cells if c.cell_type == "markdown" and notebook_title_of(c)), None)
    if first is None:
        return intro
    lines = first.source.splitlines()
    heading_at = next(i for i, line in enumerate(lines) if _HEADING.match(line))
    rest = "\n".join(lines[heading_at + 1:])
    # the list may follow its label without a blank line: split the label off its own line
    rest = re.sub(r"^(\*\*what you will learn:?\*\*:?)[ \t]*\n", r"\1\n\n", rest,
                  flags=re.IGNORECASE | re.MULTILINE)
    paragraphs = _paragraphs(rest)
    for k, para in enumerate(paragraphs):
        stripped = para.strip()
        if _HEADING.match(stripped.splitlines()[0]):
            break  # the next section
        time_match = _TIME.match(stripped)
        if time_match:
            intro.time_note = intro.time_note or " ".join(time_match.group(1).split())
        elif _LEARN.match(stripped):
            if k + 1 < len(paragraphs):
                intro.learn = _list_items(paragraphs[k + 1])
        elif _LIST_ITEM.match(stripped.splitlines()[0]) or re.fullmatch(r"\*\*[^*]+\*\*:?", stripped):
            continue
        elif intro.summary is None:
            intro.summary = " ".join(stripped.split())
    return intro


def notebook_title_of(cell) -> str | None:
    """The first heading of one markdown cell, or None."""
    for line in cell.source.splitlines():
        match = _HEADING.match(line)
        if match:
            return match.group(1)
    return None


def _list_items(block: str) -> list[str]:
    """The items of a Markdown list (continuation lines joined; a trailing ``;`` or ``.`` kept)."""
    items: list[str] = []
    for line in block.splitlines():
        match = _LIST_ITEM.match(line)
        if match:
            items.append(match.group(1).strip())
        elif items and line.strip():
            items[-1] += " " + line.strip()
    return items


def reading_minutes(nb) -> tuple[int, str]:
    """How long a page takes to read: ``metadata.maxsq.minutes`` if the notebook states it,
    else an estimate from its length.

    The estimate: its prose (markdown cells and Markdown outputs) at :data:`WORDS_PER_MINUTE`,
    :data:`SECONDS_PER_FIGURE` per image output, :data:`SECONDS_PER_CODE_CELL` per code cell
    shown (solutions and the ``parameters`` cell left out), rounded up to 5 minutes.

    Returns:
        ``(minutes, how)``, ``how`` being ``"stated"`` or ``"estimated"``.
    """
    stated = _maxsq_metadata(nb).get("minutes")
    if isinstance(stated, (int, float)) and not isinstance(stated, bool) and stated > 0:
        return int(math.ceil(stated)), "stated"
    words = figures = code_cells = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            words += len(cell.source.split())
        elif cell.cell_type == "code" and not is_solution(cell):
            tags = cell.metadata.get("tags") or []
            if "parameters" not in tags and "injected-parameters" not in tags:
                code_cells += 1
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                figures += any(k.startswith("image/") for k in data)
                if "text/markdown" in data:
                    words += len(str(data["text/markdown"]).split())
    seconds = 60 * words / WORDS_PER_MINUTE + SECONDS_PER_FIGURE * figures \
        + SECONDS_PER_CODE_CELL * code_cells
    return max(5, 5 * math.ceil(seconds / 300)), "estimated"


@dataclass
class Page:
    """One exported notebook: where it goes and what the index and the links say about it."""

    source: Path
    name: str                     # "<stem>.html"
    chapter: str                  # the stem before the first "-": "04_adaptation"
    variant: str | None           # "maxsquare_iw", "Rome" (None: not a per-method/city copy)
    heading: str                  # the notebook's first heading (or its stem)
    title: str                    # distinct: "04 · Adaptation — MaxSquare+IW"
    intro: Intro
    minutes: int
    minutes_how: str              # "stated" | "estimated"

    @property
    def short_heading(self) -> str:
        """The chapter's name without its subtitle: ``04 · Adaptation``."""
        return self.heading.split(":", 1)[0].strip() or self.heading


def describe(path: Path, nb) -> Page:
    """The :class:`Page` of one notebook (its file name decides chapter and variant)."""
    stem = path.stem
    chapter, _, variant = stem.partition("-")
    heading = notebook_title(nb) or stem
    meta = _maxsq_metadata(nb)
    intro = notebook_intro(nb)
    if isinstance(meta.get("summary"), str) and meta["summary"].strip():
        intro.summary = meta["summary"].strip()
    minutes, how = reading_minutes(nb)
    page = Page(source=path, name=f"{stem}.html", chapter=chapter, variant=variant or None,
                heading=heading, title=heading, intro=intro, minutes=minutes, minutes_how=how)
    if page.variant:
        page.title = f"{page.short_heading} — {variant_label(page.variant)}"
    return page


# ----------------------------------------------------------------------------------------------
# the pages
# ----------------------------------------------------------------------------------------------

_STYLE = """
nav.maxsq-nav { font-family: var(--jp-ui-font-family, sans-serif); font-size: 0.95em;
  display: flex; flex-wrap: wrap; gap: 0.4em 1.2em; justify-content: space-between;
  align-items: baseline; padding: 0.6em 1em; margin: 0 0 1em 0; background: #f3f5f8;
  border-bottom: 1px solid #d8dde6; }
nav.maxsq-nav.maxsq-bottom { margin: 2em 0 0 0; border-top: 1px solid #d8dde6; border-bottom: 0; }
nav.maxsq-nav a { text-decoration: none; }
nav.maxsq-nav .maxsq-edition { font-size: 0.9em; color: #555; }
details.maxsq-solution { margin: 0.4em 0 0.8em 0; border: 1px solid #cfd8e3; border-radius: 4px;
  padding: 0.2em 0.6em; background: #fafcff; }
details.maxsq-solution > summary { cursor: pointer; font-weight: 600; padding: 0.3em 0;
  font-family: var(--jp-ui-font-family, sans-serif); }
p.maxsq-solution-omitted { font-family: var(--jp-content-font-family, sans-serif);
  font-style: italic; color: #555; margin: 0.4em 0 0.8em 0; padding-left: 86px; }
div.maxsq-widget-note { font-family: var(--jp-content-font-family, sans-serif); font-style: italic;
  color: #555; padding: 0.3em 0; }
math { font-size: 1.12em; }
math[display="block"] { margin: 0.6em 0; }
code.maxsq-tex { white-space: pre-wrap; }
"""

_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{# maxsq: the lab template, self-contained (no script from a CDN), solutions folded, page links #}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style type="text/css">{{ resources.maxsq.style }}</style>{% endblock extra_css %}
{%- block body_header -%}
{{ super() }}
{{ resources.maxsq.nav_top }}
{%- endblock body_header -%}
{% block body_footer %}
{{ resources.maxsq.nav_bottom }}
{{ super() }}
{% endblock body_footer %}
{% block any_cell %}
{%- if cell.cell_type == 'code' and cell | maxsq_is_solution -%}
{%- if resources.maxsq.student -%}
<p class="maxsq-solution-omitted">{{ cell | maxsq_solution_name | e }}: left out of the student edition
(<a href="{{ resources.maxsq.full_page }}">this page with the solutions</a>).</p>
{%- else -%}
<details class="maxsq-solution"><summary>{{ cell | maxsq_solution_name | e }}</summary>
{{ super() }}
</details>
{%- endif -%}
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock any_cell %}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | maxsq_latex_to_mathml }}
</div>
{%- endblock data_latex %}
"""

_TEMPLATE_NAME = "maxsq_course.html.j2"

_WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_WIDGET_NOTE = ('<div class="maxsq-widget-note">An interactive widget: it needs a live kernel '
                '(open the notebook in JupyterLab).</div>')


def _solution_name(cell) -> str:
    match = _SOLUTION_NAME.match(cell.source)
    return " ".join(match.group(1).split()) if match else "Solution"


def _exporter():
    """nbconvert's HTMLExporter with this module's template, filters and Markdown renderer."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter

    class CourseHTMLExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get("cell", {})
            path = context.get("resources", {}).get("metadata", {}).get("path", "")
            return markdown_to_html(
                source, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
                path=path, anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)

    exporter = CourseHTMLExporter(extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
                                  template_file=_TEMPLATE_NAME)
    exporter.register_filter("maxsq_is_solution", is_solution)
    exporter.register_filter("maxsq_solution_name", _solution_name)
    exporter.register_filter("maxsq_latex_to_mathml", _latex_output_to_mathml)
    return exporter


def _nav(pages: Sequence[Page], k: int, student: bool, where: str) -> str:
    """The links of page ``k``: previous, the index, next (reading order), the other edition."""
    def link(page: Page, rel: str, text: str) -> str:
        return (f'<a rel="{rel}" href="{quote(page.name)}" title="{html.escape(page.title)}">'
                f'{text}</a>')

    prev_html = (link(pages[k - 1], "prev", f"← {html.escape(pages[k - 1].title)}") if k > 0
                 else '<span class="maxsq-none">(first page)</span>')
    next_html = (link(pages[k + 1], "next", f"{html.escape(pages[k + 1].title)} →")
                 if k + 1 < len(pages) else '<span class="maxsq-none">(last page)</span>')
    here = (f' · <strong class="maxsq-here">{html.escape(variant_label(pages[k].variant))}</strong>'
            if pages[k].variant else "")
    other = (f'<a class="maxsq-edition" href="../{quote(pages[k].name)}">with solutions</a>'
             if student else
             f'<a class="maxsq-edition" href="{STUDENT_DIR}/{quote(pages[k].name)}">'
             f'without solutions</a>')
    return (f'<nav class="maxsq-nav maxsq-{where}" aria-label="course pages">\n'
            f'<span class="maxsq-prev">{prev_html}</span>\n'
            f'<span><a rel="index" href="{INDEX_NAME}">Contents</a> · page {k + 1} of {len(pages)}'
            f'{here} · {other}</span>\n'
            f'<span class="maxsq-next">{next_html}</span>\n</nav>')


def notebook_page(nb, title: str, *, student: bool = False, nav_top: str = "",
                  nav_bottom: str = "", full_page: str = "", exporter=None) -> str:
    """One notebook as a standalone HTML page (nbconvert's ``lab`` template, extended).

    Args:
        nb: the notebook node (not modified).
        title: the page's ``<title>``.
        student: leave the solution cells out (else fold each in a closed ``<details>``).
        nav_top, nav_bottom: HTML put at the top and the bottom of the page (the links).
        full_page: the link from a left-out solution to the page that has it.
        exporter: an exporter from :func:`_exporter` to reuse (one is made if None).
    Returns:
        the HTML text.
    """
    exporter = exporter or _exporter()
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # widget state: useless without the manager it would load
    nb.metadata.pop("title", None)    # the template prefers it over the title given here
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if _WIDGET_VIEW in output.get("data", {}):
                output["data"] = {"text/html": _WIDGET_NOTE}
    resources = {"metadata": {"name": title},
                 "maxsq": {"student": student, "style": _STYLE, "nav_top": nav_top,
                           "nav_bottom": nav_bottom, "full_page": full_page}}
    body, _resources = exporter.from_notebook_node(nb, resources=resources)
    return _strip_css_comments(body)


_STYLE_BLOCK = re.compile(r"(<style\b[^>]*>)(.*?)(</style>)", re.DOTALL | re.IGNORECASE)
_CSS_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


def _strip_css_comments(page: str) -> str:
    """The page without the comments of its inlined style sheets (JupyterLab's theme cites its
    sources by URL there: a page should name no address it does not link to)."""
    return _STYLE_BLOCK.sub(lambda m: m.group(1) + _CSS_COMMENT.sub("", m.group(2)) + m.group(3),
                            page)


# ----------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------

_INDEX_STYLE = """
body { font-family: sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; line-height: 1.5;
  color: #1d232b; }
p.maxsq-start { font-size: 1.15em; background: #eef4ff; border-left: 4px solid #3b6fd8;
  padding: 0.6em 1em; }
p.maxsq-editions { color: #444; }
ol.maxsq-chapters > li { margin: 1.2em 0; }
.maxsq-chapter-title { font-size: 1.12em; font-weight: 600; }
.maxsq-minutes { color: #555; font-size: 0.92em; white-space: nowrap; }
.maxsq-summary { margin: 0.3em 0; }
.maxsq-learn { margin: 0.2em 0; font-size: 0.95em; }
.maxsq-learn-label { font-weight: 600; font-size: 0.92em; color: #333; }
.maxsq-time-note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
ul.maxsq-variants { margin: 0.3em 0; }
math { font-size: 1.12em; }
"""


def _inline_markdown(text: str) -> str:
    """Markdown of one paragraph or list item as inline HTML (no ``<p>``), equations as MathML."""
    rendered = markdown_to_html(text, exclude_anchor_links=True).strip()
    match = re.fullmatch(r"<p>(.*)</p>", rendered, flags=re.DOTALL)
    return match.group(1) if match else rendered


def _minutes_text(page: Page, each: bool = False) -> str:
    how = ("as the notebook states" if page.minutes_how == "stated"
           else "estimated from its length: prose, figures and code cells")
    return (f'<span class="maxsq-minutes" title="{how}">'
            f'{"each page " if each else ""}about {page.minutes} min</span>')


def _duration(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    return f"{minutes} min" if not hours else f"{hours} h" + (f" {rest} min" if rest else "")


def index_page(pages: Sequence[Page], heading: str, *, student: bool = False) -> str:
    """The contents: chapters in reading order, what each teaches and how long it takes.

    Args:
        pages: the pages in reading order (a chapter's copies follow each other).
        heading: the index's title and ``<h1>``.
        student: the student edition's index (links to the full edition's).
    Returns:
        the HTML text (no dates or versions, so the same course gives the same bytes).
    """
    chapters: list[list[Page]] = []
    for page in pages:
        if chapters and chapters[-1][0].chapter == page.chapter:
            chapters[-1].append(page)
        else:
            chapters.append([page])
    items = []
    for group in chapters:
        first = group[0]
        grouped = len(group) > 1 or first.variant is not None
        title = first.short_heading if grouped else first.title
        lines = ['<li class="maxsq-chapter">']
        if grouped:
            lines.append(f'<span class="maxsq-chapter-title">{html.escape(title)}</span> '
                         f'· {len(group)} pages · {_minutes_text(first, each=True)}')
        else:
            lines.append(f'<a class="maxsq-chapter-title" href="{quote(first.name)}">'
                         f'{html.escape(title)}</a> · {_minutes_text(first)}')
        if first.intro.summary:
            lines.append(f'<p class="maxsq-summary">{_inline_markdown(first.intro.summary)}</p>')
        if first.intro.learn:
            learn = "\n".join(f"  <li>{_inline_markdown(item)}</li>" for item in first.intro.learn)
            lines.append(f'<div class="maxsq-learn"><span class="maxsq-learn-label">What you will '
                         f'learn</span>\n<ul>\n{learn}\n</ul></div>')
        if not first.intro.summary and not first.intro.learn:
            lines.append('<p class="maxsq-summary">(the notebook does not say)</p>')
        if first.intro.time_note:
            lines.append(f'<p class="maxsq-time-note">Time, in the notebook’s words: '
                         f'{_inline_markdown(first.intro.time_note)}</p>')
        if grouped:
            variants = "\n".join(
                f'  <li><a href="{quote(p.name)}" title="{html.escape(p.title)}">'
                f'{html.escape(p.title)}</a></li>' for p in group)
            lines.append(f'<ul class="maxsq-variants">\n{variants}\n</ul>')
        lines.append("</li>")
        items.append("\n".join(lines))
    total = sum(group[0].minutes for group in chapters)
    start = ""
    if pages:
        start = (f'<p class="maxsq-start"><strong>Start here:</strong> '
                 f'<a rel="next" href="{quote(pages[0].name)}">{html.escape(pages[0].title)}</a>, '
                 f'then follow the “next” link at the bottom of each page. {len(chapters)} '
                 f'chapters, {len(pages)} pages; about {_duration(total)} of reading with one page '
                 f'per chapter.</p>')
    editions = ('<p class="maxsq-editions">Student edition: the exercises without their '
                f'solutions. <a href="../{INDEX_NAME}">The full edition</a> has them.</p>'
                if student else
                '<p class="maxsq-editions">Each exercise’s solution is folded under it: click '
                f'“Solution” to open it. <a href="{STUDENT_DIR}/{INDEX_NAME}">The student '
                'edition</a> leaves the solutions out.</p>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n"
            f"<title>{html.escape(heading)}</title>\n<style>{_INDEX_STYLE}</style>\n"
            f"</head>\n<body>\n<h1>{html.escape(heading)}</h1>\n{start}\n{editions}\n"
            f"<ol class=\"maxsq-chapters\">\n" + "\n".join(items) + "\n</ol>\n</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------
# the export
# ----------------------------------------------------------------------------------------------


def export_html(notebook_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                heading: str = "maxsq course: the executed notebooks",
                student: bool = True) -> list[Path]:
    """Export executed notebooks to HTML pages with an index, in two editions.

    Every notebook is read and every page rendered before anything is written, so an unreadable
    notebook leaves the folder as it was; each file is written atomically (a temporary file, then
    a rename).

    Args:
        notebook_paths: ``.ipynb`` files in reading order; page ``<stem>.html`` for each.
        out_dir: output folder (created): the full edition, and the student edition in
            ``<out_dir>/student/``.
        heading: title of the index page.
        student: also write the student edition.
    Returns:
        the written files: the full edition's pages in the given order, its ``index.html``, then
        the same for the student edition.
    Raises:
        FileNotFoundError, ValueError: a notebook is missing or unreadable (the message names it).
    """
    out_dir = Path(out_dir)
    paths = [Path(p) for p in notebook_paths]
    notebooks = [read_notebook(p) for p in paths]
    pages = [describe(path, nb) for path, nb in zip(paths, notebooks)]
    exporter = _exporter()
    editions = [(out_dir, False, heading)]
    if student:
        editions.append((out_dir / STUDENT_DIR, True, f"{heading} (student edition)"))
    files: list[tuple[Path, str]] = []
    for folder, is_student, title in editions:
        for k, (page, nb) in enumerate(zip(pages, notebooks)):
            text = notebook_page(nb, page.title, student=is_student,
                                 nav_top=_nav(pages, k, is_student, "top"),
                                 nav_bottom=_nav(pages, k, is_student, "bottom"),
                                 full_page=f"../{quote(page.name)}", exporter=exporter)
            files.append((folder / page.name, text))
        files.append((folder / INDEX_NAME, index_page(pages, title, student=is_student)))
    return [write_text_atomic(path, text) for path, text in files]
