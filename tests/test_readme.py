"""The README's library snippet runs and computes the engine's target loss."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from maxsq_lib.engine import make_strategy

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_library_snippet_is_the_engine_s_recipe():
    section = README.read_text().split("## The library", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (1, 41, 57, 3), generator=g).to(torch.uint8)
    label = torch.randint(-1, 19, (1, 41, 57), generator=g)
    scope = {"batches": [(rgb, label, rgb.flip(2))]}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102  (our own README, in a test)
    engine_loss, _ = make_strategy("maxsquare_iw", lambda_target=0.1)(scope["t_main"].detach(), None)
    torch.testing.assert_close(scope["t_loss"].detach(), engine_loss)
    assert scope["opt"].param_groups[1]["lr"] == 10 * scope["opt"].param_groups[0]["lr"] == 2.5e-3
    assert 0 <= float(scope["metrics"].miou(scope["conf"])) <= 1
