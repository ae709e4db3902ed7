"""The adaptation probe: per-confidence-bin gradient shares, accuracy and pseudo-label precision
checked against formulas worked by hand, and its wiring into evaluation and training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxsq_lib.engine import make_strategy, train
from maxsq_lib.engine.evaluation import evaluate
from maxsq_lib.engine.probe import AdaptationProbe

from conftest import smoke_cfg  # noqa: E402


def _logits(rows):
    """(1, C, 1, N) logits whose softmax per pixel is the given probability rows."""
    p = torch.tensor(rows, dtype=torch.float64)
    return p.log().T.reshape(1, p.shape[1], 1, p.shape[0]).float()


# four pixels of three classes: confidences 0.4 (bin 0), 0.6 (bin 1), 0.8 (bin 2), 0.995 (bin 4)
ROWS = [[0.4, 0.3, 0.3], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.0025, 0.0025, 0.995]]
LABEL = torch.tensor([[[0, 1, 1, -1]]])


def _maxsquare_norm(p):
    # L = -k Σ_c p_c²  =>  ∂L/∂z_j = -2k p_j (p_j - Σ_c p_c²)
    s = sum(q * q for q in p)
    return math.sqrt(sum((2 * q * (q - s)) ** 2 for q in p))


def _entropy_norm(p):
    # H = -Σ_c p_c log p_c  =>  ∂H/∂z_j = -p_j (log p_j + H)
    h = -sum(q * math.log(q) for q in p)
    return math.sqrt(sum((q * (math.log(q) + h)) ** 2 for q in p))


@pytest.mark.parametrize("method, norm", [("maxsquare", _maxsquare_norm), ("minent", _entropy_norm)])
def test_gradient_shares_per_bin_match_the_analytic_gradients(method, norm):
    probe = AdaptationProbe(make_strategy(method))
    probe.update(_logits(ROWS), None, LABEL)
    out = probe.result()
    norms = [norm(p) for p in ROWS]
    expected = [norms[0] / sum(norms), norms[1] / sum(norms), norms[2] / sum(norms), 0.0, norms[3] / sum(norms)]
    assert out["gradient_share"] == pytest.approx(expected, rel=1e-4)
    assert out["pixel_share"] == pytest.approx([0.25, 0.25, 0.25, 0.0, 0.25])
    # pixel 0 predicts 0 (right), pixel 1 predicts 0 (label 1: wrong), pixel 2 right, pixel 3 ignored
    assert out["accuracy"] == [1.0, 0.0, 1.0, None, None]
    assert "pseudo_labels" not in out and out["images"] == 1


def test_pseudo_label_precision_and_kept_fraction():
    hard = AdaptationProbe(make_strategy("hard", threshold=0.7))
    hard.update(_logits(ROWS), None, LABEL)
    # kept: pixels 2 (0.8, label 1, predicted 1: right) and 3 (0.995, ignored label: not scored)
    assert hard.result()["pseudo_labels"] == {"kept_fraction": 0.5, "precision": 1.0}

    multi = AdaptationProbe(make_strategy("maxsquare_iw_multi", threshold=0.5))
    aux = _logits([[0.1, 0.1, 0.8], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3], [0.34, 0.33, 0.33]])
    multi.update(_logits(ROWS), aux, LABEL)
    # either head above 0.5: pixels 0 (aux 0.8), 1, 2, 3; fused argmax: 2, 1, 1, 2
    # against labels 0, 1, 1, ignored: two right of three labelled
    out = multi.result()["pseudo_labels"]
    assert out["kept_fraction"] == 1.0 and out["precision"] == pytest.approx(2 / 3)


def test_the_none_method_counts_pixels_but_has_no_gradient():
    out = AdaptationProbe(make_strategy("none"))
    out.update(_logits(ROWS), None, LABEL)
    assert "gradient_share" not in out.result() and sum(out.result()["pixel_share"]) == pytest.approx(1.0)


def test_bad_bins_are_refused():
    with pytest.raises(ValueError, match="increasing edges from 0 to 1"):
        AdaptationProbe(make_strategy("maxsquare"), bins=(0.0, 0.9, 0.5, 1.0))


def test_evaluate_with_a_probe_scores_the_same_and_refuses_flip():
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(x), self.conv(x) * 0.5

    data = [(torch.randn(3, 4, 5), torch.randint(-1, 3, (4, 5)), f"im{i}") for i in range(3)]
    net = Net()
    import maxsq_lib.labels as L

    tiny = L.ClassSet("tiny3", (0, 1, 2))
    plain = evaluate(net, data, tiny, progress=False)
    probe = AdaptationProbe(make_strategy("maxsquare_iw_multi", threshold=0.4))
    probed = evaluate(net, data, tiny, progress=False, probe=probe)
    assert torch.equal(plain.confusion, probed.confusion) and plain.mean_entropy == probed.mean_entropy
    assert probed.extra["probe"]["images"] == 3 and sum(probed.extra["probe"]["gradient_share"]) == pytest.approx(1)
    assert probed.extra["probe"]["pseudo_labels"]["kept_fraction"] > 0
    with pytest.raises(ValueError, match="without flip"):
        evaluate(net, data, tiny, progress=False, flip=True, probe=probe)


def test_training_records_the_probe_at_every_evaluation(smoke_root, tmp_path):
    runs = str(tmp_path / "runs")
    train(smoke_cfg(smoke_root, runs, "none"), "source", progress=False)
    m = train(smoke_cfg(smoke_root, runs, "maxsquare_iw_multi"), "adapt", progress=False)
    entries = [m["before"]] + m["history"]
    assert [e["iteration"] for e in entries] == [0, 2, 4]
    for e in entries:
        p = e["probe"]
        assert sum(p["pixel_share"]) == pytest.approx(1) and sum(p["gradient_share"]) == pytest.approx(1)
        assert 0 <= p["pseudo_labels"]["kept_fraction"] <= 1
        assert all(a is None or 0 <= a <= 1 for a in p["accuracy"])
    assert np.isfinite(m["last"]["miou"])


@pytest.mark.parametrize("method", ["minent", "maxsquare", "maxsquare_iw"])
def test_a_batch_gives_the_shares_of_its_images_fed_one_by_one(method):
    # the batch losses are means of per-image losses with one constant, so per-pixel gradient norms
    # scale uniformly and the shares do not depend on how the images are batched
    torch.manual_seed(1)
    logits, label = 3 * torch.randn(3, 4, 5, 6), torch.randint(-1, 4, (3, 5, 6))
    batched, single = (AdaptationProbe(make_strategy(method)) for _ in range(2))
    batched.update(logits, None, label)
    for b in range(3):
        single.update(logits[b:b + 1], None, label[b:b + 1])
    assert batched.result()["gradient_share"] == pytest.approx(single.result()["gradient_share"], rel=1e-6)
    assert batched.result()["accuracy"] == single.result()["accuracy"]
