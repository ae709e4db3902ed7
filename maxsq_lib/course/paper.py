"""The paper's numbers, the one place in the project that holds them.

Chen, Xue, Cai, "Domain Adaptation for Semantic Segmentation with Maximum Squares Loss", ICCV 2019,
as listed in the README of ZJULearning/MaxSquareLoss (SYNTHIA rows from its version before
2019-07-25; docs/authors_code.md §8). Notebook ``00_setup`` shows them, ``05_evaluation`` and
``06_cross_city`` set the runs beside them, and ``results.md`` quotes them.
"""

from __future__ import annotations

from .. import methods as method_registry
from ..config import CITIES, LOSS_METHODS

PAPER_CITATION = ("Chen, Xue, Cai, ICCV 2019, README of ZJULearning/MaxSquareLoss")
"""Where the paper's numbers come from (docs/authors_code.md §8)."""

PAPER_GTA5_CITYSCAPES: dict[str, float] = {
    "source": 36.9, "minent": 42.2, "maxsquare": 44.3, "maxsquare_iw": 45.2, "maxsquare_iw_multi": 46.4}
"""The paper's GTA5→Cityscapes mIoU-19 (%)."""

PAPER_SYNTHIA_16: dict[str, float] = {
    "source": 30.1, "minent": 38.0, "maxsquare": 39.3, "maxsquare_iw": 40.4, "maxsquare_iw_multi": 41.4}
"""The paper's SYNTHIA→Cityscapes mIoU-16 (%) (README before 2019-07-25)."""

PAPER_SYNTHIA_13: dict[str, float] = {
    "source": 34.3, "minent": 44.5, "maxsquare": 45.8, "maxsquare_iw": 46.9, "maxsquare_iw_multi": 48.2}
"""The paper's SYNTHIA→Cityscapes mIoU*-13 (%) (README before 2019-07-25)."""

PAPER_NTHU: dict[str, dict[str, float]] = {
    "Rome": {"source": 51.0, "maxsquare": 53.9, "maxsquare_iw": 54.5},
    "Rio": {"source": 48.9, "maxsquare": 52.0, "maxsquare_iw": 53.3},
    "Tokyo": {"source": 47.8, "maxsquare": 49.7, "maxsquare_iw": 50.5},
    "Taipei": {"source": 46.3, "maxsquare": 49.8, "maxsquare_iw": 50.6},
}
"""The paper's Cityscapes→NTHU mIoU-13 (%) per city."""


def paper_for(benchmark: str | None) -> tuple[dict[str, float], str]:
    """The paper's table a main benchmark is set beside, and its name: SYNTHIA→Cityscapes (mIoU-16)
    for ``synthia_cityscapes``, GTA5→Cityscapes otherwise (MiniCity imitates GTA5→Cityscapes)."""
    if benchmark == "synthia_cityscapes":
        return PAPER_SYNTHIA_16, "SYNTHIA→Cityscapes"
    return PAPER_GTA5_CITYSCAPES, "GTA5→Cityscapes"


def paper_tables_markdown() -> str:
    """The paper's tables (GTA5/SYNTHIA→Cityscapes and Cityscapes→NTHU) as markdown, cited."""
    order = ("source",) + LOSS_METHODS
    head = "| benchmark (metric) | " + " | ".join(method_registry.label(m) for m in order) + " |"
    rows = [head, "|" + "---|" * (len(order) + 1)]
    for name, table in (("GTA5→Cityscapes (mIoU-19)", PAPER_GTA5_CITYSCAPES),
                        ("SYNTHIA→Cityscapes (mIoU-16)", PAPER_SYNTHIA_16),
                        ("SYNTHIA→Cityscapes (mIoU*-13)", PAPER_SYNTHIA_13)):
        rows.append(f"| {name} | " + " | ".join(f"{table[m]:.1f}" for m in order) + " |")
    rows += ["", "| Cityscapes→NTHU (mIoU-13) | source only | MaxSquare | MaxSquare+IW |", "|---|---|---|---|"]
    for city in CITIES:
        v = PAPER_NTHU[city]
        rows.append(f"| {city} | {v['source']:.1f} | {v['maxsquare']:.1f} | {v['maxsquare_iw']:.1f} |")
    return "\n".join(rows) + "\n"
