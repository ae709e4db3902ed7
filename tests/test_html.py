"""The HTML copy of the course: two tiny hand-made notebooks (nothing is executed) exported to
pages and an index that links them in order with their titles; unreadable notebooks are named;
``run_course`` renders what its notebooks produced."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from maxsq_lib.course import runner
from maxsq_lib.course.html_export import INDEX_NAME, export_html, notebook_title

v4 = nbformat.v4


def tiny_notebook(path: Path, heading: str, value: int) -> Path:
    """A notebook with a heading, prose, and a code cell carrying its (hand-written) output."""
    code = v4.new_code_cell(f"{value} * 2", execution_count=1, outputs=[
        v4.new_output("execute_result", {"text/plain": str(value * 2)}, execution_count=1)])
    nb = v4.new_notebook(cells=[v4.new_markdown_cell(f"# {heading}\n\nSome prose."), code])
    nbformat.write(nb, path)
    return path


@pytest.fixture
def two_notebooks(tmp_path) -> list[Path]:
    src = tmp_path / "notebooks"
    src.mkdir()
    # the names sort the other way round, so the index's order can only come from the argument
    return [tiny_notebook(src / "b_first.ipynb", "First · setup & <basics>", 20),
            tiny_notebook(src / "a_second.ipynb", "Second: data", 30)]


def test_index_links_the_pages_in_order_with_their_titles(two_notebooks, tmp_path):
    out = tmp_path / "html"
    written = export_html(two_notebooks, out)
    assert written == [out / "b_first.html", out / "a_second.html", out / INDEX_NAME]
    index = (out / INDEX_NAME).read_text(encoding="utf-8")
    items = re.findall(r'<li><a href="([^"]+)">[^<]*</a>: ([^<]*)</li>', index)
    assert items == [("b_first.html", "First · setup &amp; &lt;basics&gt;"),
                     ("a_second.html", "Second: data")]


def test_each_page_exists_and_shows_its_heading_and_output(two_notebooks, tmp_path):
    out = tmp_path / "html"
    export_html(two_notebooks, out)
    first = (out / "b_first.html").read_text(encoding="utf-8")
    second = (out / "a_second.html").read_text(encoding="utf-8")
    assert "First · setup &amp; &lt;basics&gt;" in first and "Some prose." in first
    assert "<title>First · setup &amp; &lt;basics&gt;</title>" in first
    assert "Second: data" in second
    assert ">40<" in first and ">60<" in second  # each page carries its own code output
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in out.iterdir()) == ["a_second.html", "b_first.html", INDEX_NAME]


def test_an_unreadable_notebook_is_named_and_nothing_is_written(two_notebooks, tmp_path):
    broken = two_notebooks[0].parent / "c_broken.ipynb"
    broken.write_text("{ this is not json", encoding="utf-8")
    out = tmp_path / "html"
    with pytest.raises(ValueError, match=r"c_broken\.ipynb.*not a readable notebook"):
        export_html([*two_notebooks, broken], out)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"missing\.ipynb"):
        export_html([two_notebooks[0].parent / "missing.ipynb"], out)


def test_title_is_the_first_markdown_heading():
    nb = v4.new_notebook(cells=[v4.new_code_cell("# a comment, not a heading"),
                                v4.new_markdown_cell("no heading here"),
                                v4.new_markdown_cell("text\n## 01 · Data ##\n# later")])
    assert notebook_title(nb) == "01 · Data"
    assert notebook_title(v4.new_notebook(cells=[v4.new_markdown_cell("plain")])) is None


def test_course_exports_its_executed_copies_in_course_order(tmp_path):
    notebooks = tmp_path / "runs" / "smoke" / "notebooks"
    notebooks.mkdir(parents=True)
    # written out of order; 01_data is absent (not executed), so it is not listed
    for name in ("07_explorer", "00_setup", "04_adaptation-minent"):
        tiny_notebook(notebooks / f"{name}.ipynb", f"title of {name}", 1)
    lines: list[str] = []
    written = runner.export_course_html("smoke", str(tmp_path / "runs"), log=lines.append)
    assert [p.name for p in written] == ["00_setup.html", "04_adaptation-minent.html",
                                         "07_explorer.html", INDEX_NAME]
    html_dir = tmp_path / "runs" / "smoke" / "html"
    assert lines == [f"[html] 3 pages in {html_dir}/ (open index.html)"]
