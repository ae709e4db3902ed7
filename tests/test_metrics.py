"""Tests of maxsq_lib.metrics: hand-counted confusion matrices, hand-computed IoUs, golden values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from maxsq_lib import metrics as M
from maxsq_lib.labels import CITYSCAPES_19, SYNTHIA_16

# 3 classes; rows = ground truth. Class 2 never occurs (neither in GT nor predicted).
HAND_TARGET = torch.tensor([[0, 0, 0, 0, 1, 1], [-1, 7, -1, 255, -1, -1]])
HAND_PRED = torch.tensor([[0, 0, 0, 1, 1, 1], [2, 2, 0, 1, 0, 0]])
HAND_MATRIX = torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]])


def test_confusion_matrix_by_hand_skips_ignored_targets():
    conf = M.confusion_matrix(HAND_PRED, HAND_TARGET, num_classes=3)
    assert conf.dtype == torch.int64
    assert torch.equal(conf, HAND_MATRIX)


def test_confusion_matrix_accepts_numpy_and_any_batch_shape():
    conf = M.confusion_matrix(HAND_PRED.numpy().astype(np.uint8), HAND_TARGET.numpy(), 3)
    assert torch.equal(conf, HAND_MATRIX)
    conf_flat = M.confusion_matrix(HAND_PRED.reshape(-1), HAND_TARGET.reshape(-1), 3)
    assert torch.equal(conf_flat, HAND_MATRIX)


def test_confusion_matrix_extra_ignore_index():
    target = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 1, 0, 2])
    conf = M.confusion_matrix(pred, target, 3, ignore_index=1)
    assert torch.equal(conf, torch.tensor([[1, 0, 0], [0, 0, 0], [0, 0, 1]]))


@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_bad_predictions_raise(bad):
    pred = HAND_PRED.clone()
    pred[1, 0] = bad  # even at a pixel whose target is ignored
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        M.confusion_matrix(pred, HAND_TARGET, 3)


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="integer"):
        M.confusion_matrix(HAND_PRED.float(), HAND_TARGET, 3)
    with pytest.raises(ValueError, match="same shape"):
        M.confusion_matrix(HAND_PRED[:1], HAND_TARGET, 3)
    with pytest.raises(ValueError, match="square"):
        M.per_class_iou(torch.zeros(3, 4))


def test_metrics_by_hand():
    iou = M.per_class_iou(HAND_MATRIX)
    # class 0: 3 / (4 + 3 - 3); class 1: 2 / (2 + 3 - 2); class 2: 0/0
    assert iou[0].item() == pytest.approx(3 / 4) and iou[1].item() == pytest.approx(2 / 3)
    assert math.isnan(iou[2].item())
    assert M.miou(HAND_MATRIX) == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert M.miou(HAND_MATRIX, classes=[1, 2]) == pytest.approx(2 / 3)
    assert M.pixel_accuracy(HAND_MATRIX) == pytest.approx(5 / 6)
    assert M.mean_pixel_accuracy(HAND_MATRIX) == pytest.approx((3 / 4 + 1) / 2)
    assert M.fw_iou(HAND_MATRIX) == pytest.approx(4 / 6 * 3 / 4 + 2 / 6 * 2 / 3)


def test_class_only_predicted_counts_as_zero_iou():
    conf = torch.tensor([[2, 2], [0, 0]])  # class 1 is predicted twice but never in the GT
    assert M.per_class_iou(conf).tolist() == [0.5, 0.0]
    assert M.miou(conf) == pytest.approx(0.25)


def _hand_16():
    """16x16: road IoU 10/16, wall/fence/pole all predicted as road (IoU 0), sky (9) absent,
    the 11 other classes perfect."""
    conf = torch.zeros(16, 16, dtype=torch.long)
    conf[0, 0] = 10
    conf[3, 0] = conf[4, 0] = conf[5, 0] = 2
    for c in set(range(16)) - {0, 3, 4, 5, 9}:
        conf[c, c] = 5
    return conf


def test_synthia_subsets_by_hand():
    conf = _hand_16()
    assert M.miou(conf) == pytest.approx((10 / 16 + 11) / 15)
    assert M.miou_star_13(conf) == pytest.approx((10 / 16 + 11) / 12)
    with pytest.raises(ValueError, match="16x16"):
        M.miou_star_13(torch.zeros(19, 19))


def test_summarize_is_json_friendly():
    out = M.summarize(_hand_16(), "synthia16")
    json.dumps(out, allow_nan=False)
    assert out["miou"] == pytest.approx(M.miou(_hand_16()))
    assert out["miou_star13"] == pytest.approx((10 / 16 + 11) / 12)
    assert list(out["per_class_iou"]) == list(SYNTHIA_16.class_names)
    assert out["per_class_iou"]["sky"] is None and out["per_class_iou"]["road"] == pytest.approx(10 / 16)
    assert out["num_pixels"] == 10 + 6 + 55
    out19 = M.summarize(torch.eye(19, dtype=torch.long), CITYSCAPES_19)
    assert "miou_star13" not in out19 and out19["miou"] == 1.0
    with pytest.raises(ValueError, match="16 classes"):
        M.summarize(torch.eye(19), SYNTHIA_16)


def test_golden_miou_and_pixel_accuracy(golden):
    scalars, arrays, _ = golden
    conf = M.confusion_matrix(torch.from_numpy(arrays["eval_pred"]), torch.from_numpy(arrays["eval_gt"]), 19)
    assert M.miou(conf) == pytest.approx(scalars["eval_miou"], rel=1e-12)
    assert M.pixel_accuracy(conf) == pytest.approx(scalars["eval_pa"], rel=1e-12)


def test_accumulator_equals_one_shot_matrix():
    g = torch.Generator().manual_seed(0)
    preds = [torch.randint(0, 5, (2, 7, 9), generator=g) for _ in range(3)]
    targets = [torch.randint(-1, 6, (2, 7, 9), generator=g) for _ in range(3)]
    acc = M.ConfusionMatrix(5)
    for p, t in zip(preds, targets):
        acc.update(p, t)
    expected = M.confusion_matrix(torch.cat(preds), torch.cat(targets), 5)
    assert torch.equal(acc.matrix, expected)
    assert acc.num_ignored == sum(int(((t < 0) | (t >= 5)).sum()) for t in targets)
    acc.update(torch.full((3,), 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        acc.matrix
    acc.reset()
    assert torch.equal(acc.matrix, torch.zeros(5, 5, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisations")
def test_accumulator_update_does_not_synchronise_on_cuda():
    pred = HAND_PRED.cuda()
    target = HAND_TARGET.cuda()
    acc = M.ConfusionMatrix(3, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        acc.update(pred, target)
        acc.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(acc.matrix.cpu(), 2 * HAND_MATRIX)
