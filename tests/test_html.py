"""The HTML copy of the course: hand-made notebooks (nothing is executed) exported to two editions.

The full edition folds every solution in a closed ``<details>``; the student edition leaves the
solutions out; the index gives the reading order, what each chapter teaches and how long it takes,
with the per-method and per-city copies grouped under their chapter; every page links to the
previous and the next one and to the index; equations are MathML, and no page loads anything from
the network. Unreadable notebooks are named; ``run_course`` renders what its notebooks produced.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup

from maxsq_lib.course import runner
from maxsq_lib.course.html_export import (INDEX_NAME, STUDENT_DIR, export_html, notebook_intro,
                                          notebook_title, reading_minutes, tex_to_mathml)

v4 = nbformat.v4

SOLUTION_CODE = "answer = 6 * 7  # SOLUTION-CODE-MARK"
SOLUTION_OUTPUT = "the answer is 42 (SOLUTION-OUTPUT-MARK)"
QUESTION = "1. **Why?** Compute the answer."


def course_notebook(path: Path, heading: str, value: int, *, summary: str | None = None,
                    metadata: dict | None = None) -> Path:
    """A notebook shaped like the course's: a title cell (summary, what you will learn, time),
    prose with equations, a code cell with its output, an exercise and its tagged solution."""
    intro = f"# {heading}\n\n"
    if summary:
        intro += f"{summary}\n\n"
    intro += ("**What you will learn**\n- the loss $L_T = -\\sum_c p_c^2$ of this page;\n"
              "- how to read a\n  figure.\n\n**Time:** about a minute to run.")
    cells = [
        v4.new_markdown_cell(intro),
        v4.new_code_cell("profile = 'cpu'", metadata={"tags": ["parameters"]}),
        v4.new_markdown_cell("## 1 · The loss\n\nWith $\\lambda_T$ the weight:\n\n"
                             "$$\\mathcal{L} = \\frac{1}{N}\\sum_n \\lVert p_n \\rVert^2$$\n\n"
                             "Money is not math: `echo $HOME` and `$x$` in code stay as they are."),
        v4.new_code_cell(f"{value} * 2", execution_count=1, outputs=[
            v4.new_output("execute_result", {"text/plain": str(value * 2)}, execution_count=1)]),
        v4.new_markdown_cell(f"## Exercises\n\n{QUESTION}"),
        v4.new_code_cell(f"# Solution 1: the answer\n{SOLUTION_CODE}\nprint(answer)",
                         execution_count=2,
                         metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}},
                         outputs=[v4.new_output("stream", name="stdout", text=SOLUTION_OUTPUT)]),
    ]
    nb = v4.new_notebook(cells=cells, metadata=metadata or {})
    nbformat.write(nb, path)
    return path


ORDER = ["00_setup", "04_adaptation-minent", "04_adaptation-maxsquare_iw", "06_cross_city-Rome",
         "07_explorer"]
TITLES = {"00_setup": "00 · Setup: the problem & <benchmarks>",
          "04_adaptation-minent": "04 · Adaptation — MinEnt",
          "04_adaptation-maxsquare_iw": "04 · Adaptation — MaxSquare+IW",
          "06_cross_city-Rome": "06 · Cross-city adaptation — Rome",
          "07_explorer": "07 · Explorer: predictions"}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The five notebooks, exported once: ``(notebook paths, written files, output folder)``."""
    base = tmp_path_factory.mktemp("html")
    src = base / "notebooks"
    src.mkdir()
    headings = {"00_setup": "00 · Setup: the problem & <benchmarks>",
                "04_adaptation-minent": "04 · Adaptation: MinEnt, MaxSquare and more",
                "04_adaptation-maxsquare_iw": "04 · Adaptation: MinEnt, MaxSquare and more",
                "06_cross_city-Rome": "06 · Cross-city adaptation: Cityscapes → NTHU",
                "07_explorer": "07 · Explorer: predictions"}
    paths = []
    for k, stem in enumerate(ORDER):
        summary = "This notebook is run once per method, with $\\alpha = 0.2$." \
            if stem.startswith("04") else None
        metadata = {"maxsq": {"summary": "Widgets to look at predictions.", "minutes": 12}} \
            if stem == "07_explorer" else None
        paths.append(course_notebook(src / f"{stem}.ipynb", headings[stem], 10 + k,
                                     summary=summary, metadata=metadata))
    out = base / "html"
    written = export_html(paths, out)
    return paths, written, out


def soup(path: Path) -> BeautifulSoup:
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def all_pages(out: Path) -> list[Path]:
    return [folder / f"{stem}.html" for folder in (out, out / STUDENT_DIR) for stem in ORDER]


# ----------------------------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------------------------


def test_both_editions_are_written_with_an_index_each(course):
    _paths, written, out = course
    student = out / STUDENT_DIR
    assert written == ([out / f"{s}.html" for s in ORDER] + [out / INDEX_NAME]
                       + [student / f"{s}.html" for s in ORDER] + [student / INDEX_NAME])
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.html" for s in ORDER]
                                                           + [INDEX_NAME, STUDENT_DIR])
    assert sorted(p.name for p in student.iterdir()) == sorted([f"{s}.html" for s in ORDER]
                                                               + [INDEX_NAME])


def test_each_page_shows_its_heading_prose_and_output_with_a_distinct_title(course):
    _paths, _written, out = course
    for k, stem in enumerate(ORDER):
        page = soup(out / f"{stem}.html")
        assert page.title.string == TITLES[stem]
        text = page.get_text()
        assert "The loss" in text and str((10 + k) * 2) in text  # its own code output
    assert "00 · Setup: the problem &amp; &lt;benchmarks&gt;" in (out / "00_setup.html").read_text()


# ----------------------------------------------------------------------------------------------
# solutions
# ----------------------------------------------------------------------------------------------


def test_full_edition_folds_each_solution_and_its_output_in_a_closed_details(course):
    _paths, _written, out = course
    for stem in ORDER:
        page = soup(out / f"{stem}.html")
        folds = page.select("details.maxsq-solution")
        assert len(folds) == 1
        details = folds[0]
        assert not details.has_attr("open"), "a solution must be closed until the reader opens it"
        assert details.summary.get_text(strip=True) == "Solution 1"
        inside = details.get_text()
        assert "SOLUTION-CODE-MARK" in inside and "SOLUTION-OUTPUT-MARK" in inside
        # nothing of the solution outside its <details>, and the question stays in view
        details.extract()
        assert "SOLUTION" not in page.get_text().replace("Solution", "")
        assert "Compute the answer." in page.get_text()


def test_student_edition_has_no_solution_text(course):
    _paths, _written, out = course
    for stem in ORDER:
        raw = (out / STUDENT_DIR / f"{stem}.html").read_text(encoding="utf-8")
        assert "SOLUTION-CODE-MARK" not in raw and "SOLUTION-OUTPUT-MARK" not in raw
        assert "6 * 7" not in raw and "<details" not in raw
        page = soup(out / STUDENT_DIR / f"{stem}.html")
        assert "Compute the answer." in page.get_text()  # the exercise is still there
        note = page.select_one("p.maxsq-solution-omitted")
        assert "left out of the student edition" in note.get_text()
        assert note.a["href"] == f"../{stem}.html"
        assert str((10 + ORDER.index(stem)) * 2) in page.get_text()  # other outputs stay


# ----------------------------------------------------------------------------------------------
# the index
# ----------------------------------------------------------------------------------------------


def test_index_gives_reading_order_descriptions_times_and_groups(course):
    _paths, _written, out = course
    index = soup(out / INDEX_NAME)
    start = index.select_one("p.maxsq-start")
    assert "Start here" in start.get_text() and start.a["href"] == "00_setup.html"
    # every page once, in reading order
    links = [a["href"] for a in index.select("ol.maxsq-chapters a")]
    assert links == [f"{s}.html" for s in ORDER]
    chapters = index.select("ol.maxsq-chapters > li")
    assert len(chapters) == 4  # 00, 04 (two methods), 06 (one city), 07
    setup, adaptation, cross_city, explorer = chapters
    # what it teaches: the "What you will learn" items (equations as MathML), the first paragraph
    learn = [li.get_text(" ", strip=True) for li in setup.select(".maxsq-learn li")]
    assert len(learn) == 2 and learn[1] == "how to read a figure."
    assert setup.select_one(".maxsq-learn math") is not None
    assert "run once per method" in adaptation.select_one(".maxsq-summary").get_text()
    assert adaptation.select_one(".maxsq-summary math") is not None
    assert "Widgets to look at predictions." in explorer.select_one(".maxsq-summary").get_text()
    # how long: stated in the notebook's metadata, or estimated; the notebook's own time note
    assert "about 12 min" in explorer.select_one(".maxsq-minutes").get_text()
    assert "as the notebook states" in explorer.select_one(".maxsq-minutes")["title"]
    assert re.search(r"about \d+ min", setup.select_one(".maxsq-minutes").get_text())
    assert "estimated" in setup.select_one(".maxsq-minutes")["title"]
    assert "about a minute to run" in setup.select_one(".maxsq-time-note").get_text()
    # the copies under their chapter, each with its own title
    assert adaptation.select_one(".maxsq-chapter-title").get_text() == "04 · Adaptation"
    assert [a.get_text() for a in adaptation.select("ul.maxsq-variants a")] == \
        ["04 · Adaptation — MinEnt", "04 · Adaptation — MaxSquare+IW"]
    assert [a.get_text() for a in cross_city.select("ul.maxsq-variants a")] == \
        ["06 · Cross-city adaptation — Rome"]
    assert setup.select_one("a.maxsq-chapter-title").get_text() == TITLES["00_setup"]
    # the two editions point at each other
    assert index.select_one("p.maxsq-editions a")["href"] == f"{STUDENT_DIR}/{INDEX_NAME}"
    student = soup(out / STUDENT_DIR / INDEX_NAME)
    assert student.select_one("p.maxsq-editions a")["href"] == f"../{INDEX_NAME}"
    assert [a["href"] for a in student.select("ol.maxsq-chapters a")] == links


def test_prev_and_next_links_chain_through_every_page_in_order(course):
    _paths, _written, out = course
    for folder in (out, out / STUDENT_DIR):
        forward, page = [], soup(folder / INDEX_NAME).select_one("p.maxsq-start a")["href"]
        while page:
            forward.append(page)
            html = soup(folder / page)
            navs = html.select("nav.maxsq-nav")
            assert len(navs) == 2, "links at the top and at the bottom of each page"
            for nav in navs:
                assert nav.select_one('a[rel="index"]')["href"] == INDEX_NAME
            nexts = {a["href"] for nav in navs for a in nav.select('a[rel="next"]')}
            prevs = {a["href"] for nav in navs for a in nav.select('a[rel="prev"]')}
            k = len(forward) - 1
            assert prevs == ({f"{ORDER[k - 1]}.html"} if k else set())
            assert len(nexts) <= 1
            page = nexts.pop() if nexts else None
            assert len(forward) <= len(ORDER), f"the next links loop: {forward}"
        assert forward == [f"{s}.html" for s in ORDER]
        next_text = soup(folder / "00_setup.html").select_one('nav a[rel="next"]').get_text()
        assert "04 · Adaptation — MinEnt" in next_text
    # a per-method copy says which method it is
    assert soup(out / "04_adaptation-maxsquare_iw.html").select_one(".maxsq-here").get_text() == \
        "MaxSquare+IW"
    assert soup(out / "00_setup.html").select_one(".maxsq-here") is None
    # each page links to itself in the other edition
    assert soup(out / "07_explorer.html").select_one("a.maxsq-edition")["href"] == \
        f"{STUDENT_DIR}/07_explorer.html"
    assert soup(out / STUDENT_DIR / "07_explorer.html").select_one("a.maxsq-edition")["href"] == \
        "../07_explorer.html"


# ----------------------------------------------------------------------------------------------
# self-contained pages, equations
# ----------------------------------------------------------------------------------------------


def test_no_page_loads_anything_from_the_network(course):
    _paths, _written, out = course
    for path in all_pages(out) + [out / INDEX_NAME, out / STUDENT_DIR / INDEX_NAME]:
        raw = path.read_text(encoding="utf-8")
        assert not re.search(r"cdn|https?://(?!www\.w3\.org/1998/Math/MathML)", raw), \
            f"{path.name} names an address: {re.findall(r'.{40}(?:cdn|https?://).{40}', raw)[:3]}"
        page = soup(path)
        assert not page.select("script[src], link[href], iframe, img[src^=http]")
        for style in page.select("style"):
            assert "@import" not in style.get_text() and "url(http" not in style.get_text()
        assert "MathJax" not in raw and "require.js" not in raw


def test_equations_become_mathml_not_tex(course):
    _paths, _written, out = course
    page = soup(out / "00_setup.html")
    maths = page.select("math")
    assert len(maths) >= 3
    blocks = page.select('math[display="block"]')
    assert len(blocks) == 1 and blocks[0].select("mfrac")  # the display equation, with its fraction
    assert any(m.select_one("msub mi") and "λ" in m.get_text() for m in maths)  # $\lambda_T$
    text = page.get_text()
    assert "\\lambda" not in text and "\\frac" not in text and "$$" not in text
    # dollars in code are not math
    codes = [c.get_text() for c in page.select("code")]
    assert "echo $HOME" in codes and "$x$" in codes


def test_tex_to_mathml_fixes_and_falls_back():
    assert "&#x02016;" in tex_to_mathml(r"\Big\| x \Big\|_2")  # a sized norm bar
    assert ">arg<" in tex_to_mathml(r"\arg\max_c p_c")
    assert 'display="block"' in tex_to_mathml(r"x^2", display=True)
    with pytest.warns(UserWarning, match="left as TeX"):
        broken = tex_to_mathml(r"\frac{1}{")
    assert broken == '<code class="maxsq-tex">$\\frac{1}{$</code>'


def test_markdown_and_latex_outputs_are_converted_too(tmp_path):
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# Outputs"), v4.new_code_cell(
        "show()", execution_count=1, outputs=[
            v4.new_output("display_data", {"text/markdown": "gain of $\\Delta$ points",
                                            "text/plain": "<Markdown>"}),
            v4.new_output("display_data", {"text/latex": "$$\\sqrt{2}$$", "text/plain": "sqrt 2"})])])
    path = tmp_path / "outputs.ipynb"
    nbformat.write(nb, path)
    export_html([path], tmp_path / "html", student=False)
    page = soup(tmp_path / "html" / "outputs.html")
    assert page.select_one('[data-mime-type="text/markdown"] math') is not None
    assert page.select_one('[data-mime-type="text/latex"] math msqrt') is not None
    assert not (tmp_path / "html" / STUDENT_DIR).exists()


def test_a_widget_view_becomes_a_note(tmp_path):
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                        "version_minor": 0},
            "text/plain": "VBox()"}
    nb = v4.new_notebook(cells=[v4.new_markdown_cell("# W"), v4.new_code_cell(
        "w", execution_count=1, outputs=[v4.new_output("display_data", view)])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {},
                                                                            "version_major": 2}}
    path = tmp_path / "w.ipynb"
    nbformat.write(nb, path)
    export_html([path], tmp_path / "html", student=False)
    raw = (tmp_path / "html" / "w.html").read_text(encoding="utf-8")
    assert "needs a live kernel" in raw and "widget-state" not in raw and "unpkg" not in raw


# ----------------------------------------------------------------------------------------------
# reading a notebook's introduction
# ----------------------------------------------------------------------------------------------


def test_title_is_the_first_markdown_heading():
    nb = v4.new_notebook(cells=[v4.new_code_cell("# a comment, not a heading"),
                                v4.new_markdown_cell("no heading here"),
                                v4.new_markdown_cell("text\n## 01 · Data ##\n# later")])
    assert notebook_title(nb) == "01 · Data"
    assert notebook_title(v4.new_notebook(cells=[v4.new_markdown_cell("plain")])) is None


def test_intro_reads_summary_learn_list_and_time_and_tolerates_their_absence():
    nb = v4.new_notebook(cells=[v4.new_markdown_cell(
        "# 03 · Gradients\n\nThe argument is about\ngradients.\n\n**What you will learn**\n\n"
        "- one;\n- two\n  lines.\n\n**Time:** about 10 minutes of reading.\n\n## 1 · Next\n\nNot this.")])
    intro = notebook_intro(nb)
    assert intro.summary == "The argument is about gradients."
    assert intro.learn == ["one;", "two lines."]
    assert intro.time_note == "about 10 minutes of reading."
    bare = notebook_intro(v4.new_notebook(cells=[v4.new_markdown_cell("# Only a title")]))
    assert (bare.summary, bare.learn, bare.time_note) == (None, [], None)
    assert notebook_intro(v4.new_notebook(cells=[v4.new_code_cell("x = 1")])).learn == []


def test_reading_time_is_stated_or_estimated_from_length():
    stated = v4.new_notebook(cells=[v4.new_markdown_cell("# T")],
                             metadata={"maxsq": {"minutes": 17}})
    assert reading_minutes(stated) == (17, "stated")
    short = v4.new_notebook(cells=[v4.new_markdown_cell("# T\n\nA few words.")])
    assert reading_minutes(short) == (5, "estimated")
    long = v4.new_notebook(cells=[v4.new_markdown_cell("word " * 3000)]  # 20 min at 150 words/min
                           + [v4.new_code_cell("x", metadata={"tags": ["solution"]}) for _ in range(50)])
    assert reading_minutes(long) == (20, "estimated")  # solutions are not counted
    for odd in ({"minutes": "x"}, {"minutes": True}, "not a dict"):
        nb = v4.new_notebook(cells=[v4.new_markdown_cell("# T")], metadata={"maxsq": odd})
        assert reading_minutes(nb)[1] == "estimated"


# ----------------------------------------------------------------------------------------------
# errors, and the course runner
# ----------------------------------------------------------------------------------------------


def test_an_unreadable_notebook_is_named_and_nothing_is_written(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    good = course_notebook(src / "a.ipynb", "A", 1)
    broken = src / "c_broken.ipynb"
    broken.write_text("{ this is not json", encoding="utf-8")
    out = tmp_path / "html"
    with pytest.raises(ValueError, match=r"c_broken\.ipynb.*not a readable notebook"):
        export_html([good, broken], out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"missing\.ipynb"):
        export_html([src / "missing.ipynb"], out)


def test_course_exports_its_executed_copies_in_course_order(tmp_path):
    notebooks = tmp_path / "runs" / "smoke" / "notebooks"
    notebooks.mkdir(parents=True)
    # written out of order; 01_data is absent (not executed), so it is not listed
    for name in ("07_explorer", "00_setup", "04_adaptation"):
        course_notebook(notebooks / f"{name}.ipynb", f"title of {name}", 1)
    lines: list[str] = []
    written = runner.export_course_html("smoke", str(tmp_path / "runs"), log=lines.append)
    html_dir = tmp_path / "runs" / "smoke" / "html"
    pages = ["00_setup.html", "04_adaptation.html", "07_explorer.html"]
    assert written == ([html_dir / p for p in pages] + [html_dir / INDEX_NAME]
                       + [html_dir / STUDENT_DIR / p for p in pages]
                       + [html_dir / STUDENT_DIR / INDEX_NAME])
    assert lines == [f"[html] 3 pages in {html_dir}/ (open index.html; without solutions: "
                     f"{STUDENT_DIR}/index.html)"]
