"""Tests of maxsq_lib.course.analysis: closed-form gradients, share identities, constructed cases, IW maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxsq_lib.course import analysis as A
from maxsq_lib.course.plots import gradients as G
from maxsq_lib import losses as L

POINTS = np.array([0.05, 0.3, 0.5, 0.6, 0.8, 0.95, 0.99, 0.999])


def _even_share_logits(p: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) logits with p on class 0 and (1-p)/(C-1) on the others; p is (B, 1, H, W)."""
    other = ((1 - p) / (num_classes - 1)).log()
    return torch.cat([p.log()] + [other] * (num_classes - 1), dim=1)


def _gaussian_logits(seed: int, scale: float = 5.0, shape=(2, 10, 32, 32)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


# ------------------------------------------------------------------------------- analytic curves ---


def test_binary_curves_match_closed_forms():
    p = POINTS
    curves = A.binary_gradient_curves(p)
    np.testing.assert_allclose(curves["entropy_dp"], np.log((1 - p) / p), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(curves["maxsquare_dp"], -(2 * p - 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(curves["entropy_dz"], -p * (1 - p) * np.log(p / (1 - p)), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(curves["maxsquare_dz"], -p * (1 - p) * (2 * p - 1), rtol=1e-12, atol=1e-14)
    assert curves["num_classes"] == 2
    np.testing.assert_array_equal(curves["p"], p)


@pytest.mark.parametrize("num_classes", [3, 10, 19])
def test_multiclass_curves_match_closed_forms(num_classes):
    c, p = num_classes, POINTS
    q = (1 - p) / (c - 1)  # each other class
    curves = A.multiclass_gradient_curves(p, c)
    np.testing.assert_allclose(curves["entropy_dp"], np.log(q / p), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(curves["maxsquare_dp"], -(p - q), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(curves["entropy_dz"], -p * (1 - p) * np.log(p / q), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(curves["maxsquare_dz"], -p * (1 - p) * (p - q), rtol=1e-12, atol=1e-13)


def test_multiclass_curves_vanish_at_uniform_and_entropy_dp_is_unbounded():
    c = 10
    at_uniform = A.multiclass_gradient_curves(np.array([1 / c]), c)
    for key in ("entropy_dp", "maxsquare_dp", "entropy_dz", "maxsquare_dz"):
        assert abs(at_uniform[key][0]) < 1e-12
    near_one = A.multiclass_gradient_curves(np.array([1 - 1e-3, 1 - 1e-9]), c)
    assert abs(near_one["entropy_dp"][1]) > abs(near_one["entropy_dp"][0]) + 10  # grows like log
    assert abs(near_one["maxsquare_dp"][1]) <= 1.0  # bounded by 1
    assert abs(near_one["entropy_dz"][1]) < 1e-6 and abs(near_one["maxsquare_dz"][1]) < 1e-8


def test_high_low_ratio_binary_values():
    ratios = A.high_low_ratio(A.binary_gradient_curves(np.array([0.7])), high=0.95, low=0.6)
    assert ratios["entropy_dp"] == pytest.approx(math.log(19) / math.log(1.5), rel=1e-12)
    assert ratios["maxsquare_dp"] == pytest.approx(0.9 / 0.2, rel=1e-12)
    assert ratios["entropy_dz"] == pytest.approx(0.95 * 0.05 * math.log(19) / (0.6 * 0.4 * math.log(1.5)), rel=1e-12)
    assert ratios["maxsquare_dz"] == pytest.approx(0.95 * 0.05 * 0.9 / (0.6 * 0.4 * 0.2), rel=1e-12)
    with pytest.raises(ValueError, match="zero"):
        A.high_low_ratio(A.binary_gradient_curves(np.array([0.7])), low=0.5)


def test_gradient_peaks_of_the_logit_curves():
    grid = np.linspace(0.5005, 0.9995, 999)  # spacing 5e-4
    peaks = A.gradient_peaks(A.binary_gradient_curves(grid))
    # d/dp [p(1-p)(2p-1)] = 0  ->  p = 1/2 + sqrt(3)/6
    assert peaks["maxsquare_dz"] == pytest.approx(0.5 + math.sqrt(3) / 6, abs=5e-4)
    # entropy's logit gradient peaks at higher confidence than MaxSquare's (about 0.82)
    assert 0.80 < peaks["entropy_dz"] < 0.84
    assert peaks["entropy_dp"] == grid[-1]


@pytest.mark.parametrize("bad", [np.array([0.5, 1.0]), np.array([0.0, 0.3]), np.array([[0.5]]), np.array([])])
def test_curves_reject_probabilities_outside_open_interval(bad):
    with pytest.raises(ValueError, match="p"):
        A.binary_gradient_curves(bad)


def test_multiclass_rejects_bad_class_count():
    with pytest.raises(ValueError, match="num_classes"):
        A.multiclass_gradient_curves(np.array([0.5]), 1)


# ------------------------------------------------------------------- losses written over probs ---


def test_entropy_and_iw_from_probs_equal_the_library_losses():
    z = _gaussian_logits(0, scale=3.0, shape=(3, 5, 4, 6))
    p = torch.softmax(z, dim=1)
    torch.testing.assert_close(A.entropy_from_probs(p), L.entropy(z), rtol=1e-12, atol=0)
    weights = L.iw_pixel_weights(z, ratio=0.2)
    torch.testing.assert_close(A.iw_max_square_from_probs(p, weights), L.iw_max_square(z, ratio=0.2),
                               rtol=1e-12, atol=0)


def test_entropy_from_probs_gradient_finite_for_underflowed_probs():
    p = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).reshape(1, 3, 1, 1).requires_grad_(True)
    (g,) = torch.autograd.grad(A.entropy_from_probs(p), p)
    assert torch.isfinite(g).all()


# ------------------------------------------------------------------------- per-pixel gradients ---


@pytest.mark.parametrize("loss, fn", [("entropy", L.entropy), ("maxsquare", L.max_square),
                                      ("maxsquare_iw", lambda z: L.iw_max_square(z, ratio=0.2))])
def test_pixel_norms_wrt_logits_equal_batch_autograd(loss, fn):
    z = _gaussian_logits(1, scale=2.0, shape=(3, 6, 5, 4)).requires_grad_(True)
    (g,) = torch.autograd.grad(fn(z), z)
    torch.testing.assert_close(A.pixel_gradient_norms(z, loss, "logits"), g.norm(dim=1), rtol=1e-10, atol=1e-18)


@pytest.mark.parametrize("num_classes", [2, 4, 10])
def test_pixel_norms_wrt_probs_match_curves_on_even_share_pixels(num_classes):
    """On the simplex the projected gradient norm is |dL/dp along the even-share path| · sqrt((C-1)/C)."""
    c = num_classes
    p_np = np.array([0.55, 0.7, 0.9, 0.97, 0.999, 0.62])
    z = _even_share_logits(torch.tensor(p_np).reshape(1, 1, 2, 3), c)
    curves = A.multiclass_gradient_curves(p_np, c)
    pixels = p_np.size
    for loss, key in (("entropy", "entropy_dp"), ("maxsquare", "maxsquare_dp")):
        norms = A.pixel_gradient_norms(z, loss, "probs").numpy().ravel()
        expected = np.abs(curves[key]) * math.sqrt((c - 1) / c) / (c * pixels)
        np.testing.assert_allclose(norms, expected, rtol=1e-9)


def test_pixel_norms_reject_bad_arguments():
    z = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match="unknown loss"):
        A.pixel_gradient_norms(z, "hard")
    with pytest.raises(ValueError, match="wrt"):
        A.pixel_gradient_norms(z, "entropy", wrt="features")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        A.pixel_gradient_norms(torch.zeros(3, 2, 2), "entropy")


# ---------------------------------------------------------------------------------- the shares ---


def test_shares_sum_to_one_and_pixel_shares_are_counts():
    z = _gaussian_logits(2, scale=4.0, shape=(2, 7, 9, 11))
    shares = A.gradient_shares(z, dtype=torch.float64)
    p = torch.softmax(z, 1)
    confidence, predicted = p.max(1)
    edges = shares["bin_edges"]
    np.testing.assert_allclose(shares["pixels"]["class"],
                               np.bincount(predicted.numpy().ravel(), minlength=7) / predicted.numel())
    for k in range(len(edges) - 1):
        inside = (confidence >= edges[k]) & ((confidence < edges[k + 1]) | (k == len(edges) - 2))
        assert shares["pixels"]["bin"][k] == pytest.approx(inside.double().mean().item(), abs=1e-15)
    assert shares["num_pixels"] == 2 * 9 * 11
    assert shares["pixels"]["bin"].sum() == pytest.approx(1.0, abs=1e-12)
    for wrt in ("logits", "probs"):
        assert set(shares[wrt]) == set(A.LOSS_NAMES)
        for entry in shares[wrt].values():
            assert entry["bin"].shape == (5,) and entry["class"].shape == (7,)
            assert entry["bin"].sum() == pytest.approx(1.0, abs=1e-12)
            assert entry["class"].sum() == pytest.approx(1.0, abs=1e-12)
            assert entry["total_norm"] > 0
            assert entry["mean_norm"] == pytest.approx(entry["total_norm"] / shares["num_pixels"], rel=1e-12)


def test_bin_share_equals_manual_sum_of_norms():
    z = _gaussian_logits(3, scale=4.0, shape=(1, 5, 8, 8))
    shares = A.gradient_shares(z, losses=("maxsquare",), dtype=torch.float64)
    norms = A.pixel_gradient_norms(z, "maxsquare", "logits").numpy().ravel()
    confidence = torch.softmax(z, 1).max(1).values.numpy().ravel()
    above = norms[confidence >= 0.9].sum() / norms.sum()
    assert shares["logits"]["maxsquare"]["bin"][3:].sum() == pytest.approx(above, rel=1e-12)
    assert A.share_above(shares, 0.9)["logits/maxsquare"] == pytest.approx(above, rel=1e-12)


def test_all_pixels_in_one_bin_and_one_class_give_share_one():
    # every pixel: p = 0.8 on class 2 -> bin [0.7, 0.9), class 2
    p = torch.full((2, 1, 3, 4), 0.8, dtype=torch.float64)
    z = _even_share_logits(p, 5)[:, [1, 2, 0, 3, 4]]
    shares = A.gradient_shares(z, dtype=torch.float64)
    expected_bins = np.array([0, 0, 1, 0, 0], dtype=float)
    expected_classes = np.array([0, 0, 1, 0, 0], dtype=float)
    np.testing.assert_array_equal(shares["pixels"]["bin"], expected_bins)
    np.testing.assert_array_equal(shares["pixels"]["class"], expected_classes)
    for wrt in ("logits", "probs"):
        for entry in shares[wrt].values():
            np.testing.assert_allclose(entry["bin"], expected_bins, atol=1e-15)
            np.testing.assert_allclose(entry["class"], expected_classes, atol=1e-15)


def test_top_bin_includes_probability_one():
    z = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    z[0, 0, 0, 0] = 1000.0  # max p == 1.0 exactly
    z[0, 1, 0, 1] = 1.0
    shares = A.gradient_shares(z, losses=("maxsquare",))
    assert shares["pixels"]["bin"][-1] == 0.5 and shares["pixels"]["bin"][1] == 0.5


def test_even_share_pixels_entropy_favours_confident_pixels_more_than_maxsquare():
    """The paper's picture: when the other classes share 1-p evenly, entropy's gradient (w.r.t. p
    and w.r.t. the logits) puts a larger share on pixels above 0.9 than MaxSquare's."""
    c = 10
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        p = torch.rand(1, 1, 16, 16, generator=g, dtype=torch.float64) * (1 - 1 / c - 1e-3) + 1 / c + 1e-3
        above = A.share_above(A.gradient_shares(_even_share_logits(p, c), losses=("entropy", "maxsquare")))
        assert above["probs/entropy"] > above["probs/maxsquare"] + 0.005
        assert above["logits/entropy"] > above["logits/maxsquare"]


def test_gaussian_logits_direction_depends_on_the_variable():
    """Verified numerically (20 seeds, scales 3-8, C in 5-19) before writing this test: on i.i.d.
    Gaussian logits entropy puts more of its *logit*-gradient share above 0.9 than MaxSquare, but
    w.r.t. the *probabilities* it is the other way round, because entropy's projected probability
    gradient is the centred log-probability vector, whose size hardly depends on the confidence."""
    for seed in range(3):
        above = A.share_above(A.gradient_shares(_gaussian_logits(seed), losses=("entropy", "maxsquare")))
        assert above["pixels"] > 0.3
        assert above["logits/entropy"] > above["logits/maxsquare"] + 0.01
        assert above["probs/maxsquare"] > above["probs/entropy"] + 0.01


def test_iw_moves_class_share_to_the_rare_class_exactly():
    # one image, 90 pixels of class 0 and 10 of class 1, all at the same confidence 0.9
    p = torch.full((1, 1, 10, 10), 0.9, dtype=torch.float64)
    z = _even_share_logits(p, 3)
    z[0, :, 9, :] = z[0, [1, 0, 2], 9, :]  # last row predicts class 1
    shares = A.gradient_shares(z, losses=("maxsquare", "maxsquare_iw"), ratio=0.2, dtype=torch.float64)
    for wrt in ("logits", "probs"):
        assert shares[wrt]["maxsquare"]["class"][1] == pytest.approx(0.1, rel=1e-12)
        w0, w1 = 90.0 ** -0.2, 10.0 ** -0.2  # the common factor N^-0.8 cancels
        assert shares[wrt]["maxsquare_iw"]["class"][1] == pytest.approx(10 * w1 / (10 * w1 + 90 * w0), rel=1e-12)


def test_gradient_shares_rejects_bad_arguments():
    z = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="bins"):
        A.gradient_shares(z, bins=(0.5, 0.9, 1.0))  # does not reach 1/C = 0.25
    with pytest.raises(ValueError, match="bins"):
        A.gradient_shares(z, bins=(0.0, 0.9, 0.8, 1.0))
    with pytest.raises(ValueError, match="losses"):
        A.gradient_shares(z, losses=("entropy", "kl"))
    with pytest.raises(ValueError, match="zero"):
        A.gradient_shares(torch.zeros(1, 4, 3, 3))  # uniform everywhere: no gradient
    with pytest.raises(ValueError, match="bin edge"):
        A.share_above(A.gradient_shares(z), 0.8)


# -------------------------------------------------------------------------------- IW weights ---


def test_iw_weight_maps_wrap_the_library():
    z = _gaussian_logits(4, scale=3.0, shape=(2, 6, 5, 7)).float()
    for ratio in (0.0, 0.2, 0.5):
        maps = A.iw_weight_maps(z, ratio=ratio)
        assert isinstance(maps, np.ndarray) and maps.shape == (2, 5, 7)
        np.testing.assert_array_equal(maps, L.iw_pixel_weights(z, ratio=ratio).numpy())
    np.testing.assert_allclose(A.iw_weight_maps(z, ratio=0.0), np.full((2, 5, 7), 1 / 35))


# ----------------------------------------------------------------------------------- figures ---


def test_plot_helpers_build_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.51, 0.99, 25)
    fig = G.curves(A.binary_gradient_curves(grid), A.multiclass_gradient_curves(grid, 10))
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    plt.close(fig)
    z = _gaussian_logits(5, scale=4.0, shape=(1, 10, 6, 8)).float()
    fig = G.shares(A.gradient_shares(z), class_names=[f"c{i}" for i in range(10)])
    assert len(fig.axes) == 4
    plt.close(fig)
    images = np.zeros((2, 6, 8, 3), dtype=np.uint8)
    fig = G.iw_weights(images, z.argmax(1).numpy().repeat(2, 0), A.iw_weight_maps(z).repeat(2, 0), 10)
    assert len(fig.axes) == 7  # 2 rows x 3 panels + colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="same non-zero count"):
        G.iw_weights(images, z.argmax(1).numpy(), A.iw_weight_maps(z), 10)


def test_dose_at_start_is_the_ratio_of_parameter_gradient_norms():
    from maxsq_lib.engine.strategies import make_strategy
    from maxsq_lib.models import deeplabv2_from_preset

    torch.manual_seed(0)
    model = deeplabv2_from_preset("minicity", 10)
    src, tgt = torch.randn(2, 3, 32, 64), torch.randn(2, 3, 32, 64)
    labels = torch.randint(0, 10, (2, 32, 64))
    labels[:, :4] = -1  # ignored pixels stay ignored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = A.dose_at_start(model, [(src, labels, tgt)], ["minent", "maxsquare"], lambda_seg=0.1)
    # by hand, with the same train-mode forward passes on a fresh copy of the model
    import copy
    net = copy.deepcopy(model).train()
    params = [p for p in net.parameters() if p.requires_grad]

    def norm(loss):
        return torch.sqrt(sum((g.double() ** 2).sum() for g in torch.autograd.grad(loss, params, allow_unused=True)
                              if g is not None)).item()

    main, aux = net(src, with_aux=True)
    ce = L.source_cross_entropy(main, labels) + 0.1 * L.source_cross_entropy(aux, labels)
    g_ce = norm(ce)
    with torch.no_grad():
        net(tgt, with_aux=True)  # the measurement's no-grad pass also moves the BN statistics
    for name in ("minent", "maxsquare"):
        loss, _ = make_strategy(name, lambda_target=1.0)(*net(tgt, with_aux=True))
        assert out["methods"][name]["ratio"] == pytest.approx(norm(loss) / g_ce, rel=1e-6)
    assert out["methods"]["maxsquare"]["logit_ratio_to_maxsquare"] == pytest.approx(1.0)
    assert out["methods"]["minent"]["logit_ratio_to_maxsquare"] > 1.0  # MinEnt's larger logit gradient
    assert out["batches"] == 1
    # the model given is not touched (the measurement runs on a copy)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_calibration_bins_by_hand():
    conf = np.array([0.05, 0.15, 0.95, 1.0, 0.55, 0.58])
    correct = np.array([0, 1, 1, 1, 0, 1])
    out = A.calibration_bins(conf, correct, bins=10)
    assert out["count"].tolist() == [1, 1, 0, 0, 0, 2, 0, 0, 0, 2]
    assert out["accuracy"][5] == pytest.approx(0.5) and out["confidence"][9] == pytest.approx(0.975)
    assert np.isnan(out["accuracy"][2])
    expected = (1 * 0.05 + 1 * 0.85 + 2 * abs(0.5 - 0.565) + 2 * abs(1 - 0.975)) / 6
    assert out["ece"] == pytest.approx(expected)
    perfect = A.calibration_bins(np.array([0.25, 0.75, 0.75, 0.75, 0.75]), np.array([0, 1, 1, 1, 0]), bins=2)
    assert perfect["ece"] == pytest.approx(0.2 * 0.25 + 0.8 * 0.0)
    with pytest.raises(ValueError, match="differ in size"):
        A.calibration_bins(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        A.calibration_bins(np.array([1.2]), np.array([1]))


# ----------------------------------------------------------- paper scale: grid sample, float32 ---


def _smooth_logits(seed: int, shape=(2, 10, 16, 32), up: int = 8, scale: float = 6.0) -> torch.Tensor:
    """Logits that vary smoothly in space, as a segmentation head's upsampled output does."""
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    return torch.nn.functional.interpolate(z, scale_factor=up, mode="bilinear", align_corners=False)


def _share_arrays(shares: dict) -> dict[str, np.ndarray]:
    out = {f"pixels/{g}": shares["pixels"][g] for g in ("bin", "class")}
    for wrt in ("logits", "probs"):
        for name, entry in shares[wrt].items():
            out.update({f"{wrt}/{name}/{g}": entry[g] for g in ("bin", "class")})
    return out


def test_float32_shares_agree_with_float64_to_1e_5():
    for z in (_smooth_logits(0), _gaussian_logits(1, scale=6.0)):
        f64 = _share_arrays(A.gradient_shares(z, dtype=torch.float64))
        f32 = _share_arrays(A.gradient_shares(z.float()))
        assert set(f32) == set(f64)
        for key in f64:
            np.testing.assert_allclose(f32[key], f64[key], rtol=0, atol=1e-5, err_msg=key)


def test_shares_on_a_grid_sample_equal_the_full_computation_within_sampling_error():
    """Seed 0, 2 images of 128x256 smooth logits, stride 4 (1/16 of the pixels): measured before
    writing the test, the largest difference of any bin or class share was 2.3 points (seeds 0-3)."""
    z = _smooth_logits(0)
    stride = A.grid_stride(*z.shape[-2:], max_pixels=2048)
    assert stride == 4
    full = A.gradient_shares(z, dtype=torch.float64)
    sample = A.gradient_shares(z[..., ::stride, ::stride], dtype=torch.float64)
    assert sample["num_pixels"] == full["num_pixels"] // 16
    full_arrays, sample_arrays = _share_arrays(full), _share_arrays(sample)
    for key in full_arrays:
        np.testing.assert_allclose(sample_arrays[key], full_arrays[key], rtol=0, atol=0.03, err_msg=key)
    full_above, sample_above = A.share_above(full), A.share_above(sample)
    for key in full_above:
        assert sample_above[key] == pytest.approx(full_above[key], abs=0.015), key
    # the direction the chapter reads is kept: entropy above MaxSquare w.r.t. the logits
    assert (sample_above["logits/entropy"] > sample_above["logits/maxsquare"]) == \
        (full_above["logits/entropy"] > full_above["logits/maxsquare"])


def test_grid_stride_and_logit_bytes_at_the_paper_profile():
    assert A.grid_stride(64, 128) == 1                       # MiniCity's maps are kept whole
    assert A.grid_stride(512, 1024) == 4                     # paper: 128 x 256 = 32,768 pixels
    assert A.grid_stride(513, 1024) == 5                     # 129 x 256 would exceed the budget
    assert A.grid_stride(10, 10, max_pixels=1) == 10
    with pytest.raises(ValueError, match="positive"):
        A.grid_stride(0, 10)
    # 64 images of 1024 x 512, 19 classes: pixels x classes x bytes
    assert A.logit_bytes(64, 512, 1024, 19, dtype=torch.float64) == 64 * 524_288 * 19 * 8 == 5_100_273_664
    assert A.logit_bytes(64, 512, 1024, 19) == 2_550_136_832
    assert A.logit_bytes(64, 512, 1024, 19, stride=4) == 64 * 32_768 * 19 * 4 == 159_383_552


def test_target_logits_cut_each_map_to_the_grid_in_float32():
    torch.manual_seed(0)
    head = torch.nn.Conv2d(3, 5, 3, padding=1).double()

    def model(x):  # a (main, aux) pair, as DeepLabv2 returns in eval mode
        return head(x), None

    images = torch.randn(5, 3, 20, 36, dtype=torch.float64)
    logits, stride = A.target_logits(model, images, max_pixels=150, chunk=2)
    assert stride == 3 and logits.dtype == torch.float32 and logits.shape == (5, 5, 7, 12)
    with torch.no_grad():
        expected = head(images)[..., ::3, ::3].float()
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    whole, one = A.target_logits(model, images)
    assert one == 1 and whole.shape == (5, 5, 20, 36)


# ------------------------------------------------------------------ the learner beside the study ---


def _study_with_shares(shares: dict[str, tuple[float, ...]], pixels: tuple[float, ...]):
    """A hand-made study: each loss run's probe at iteration 0 puts ``shares[run][seed]`` of its
    logit gradient and ``pixels[seed]`` of the pixels in the bins above 0.9."""
    from maxsq_lib.course import results as R

    runs = []
    for run, values in shares.items():
        for seed, g in enumerate(values):
            probe = {"bin_edges": [0.0, 0.5, 0.7, 0.9, 0.99, 1.0], "images": 2,
                     "pixel_share": [0.0, 0.0, 1 - pixels[seed], pixels[seed], 0.0],
                     "gradient_share": [0.0, 0.0, 1 - g, g / 2, g / 2], "accuracy": [None] * 5}
            start = {"iteration": 0, "miou": 0.4, "per_class_iou": {"road": 0.4}, "probe": probe}
            runs.append({"stage": "adapt", "run": run, "method": run, "benchmark": "minicity", "seed": seed,
                         "class_names": ["road"], "iterations": 100, "lambda_target": 0.1, "bn_mode": "train",
                         "before": start, "history": [],
                         "last": {"iteration": 100, "miou": 0.45, "per_class_iou": {"road": 0.45}}})
    return R.study_of(runs, "cpu")


def test_compare_shares_reads_the_study_and_applies_the_one_rule(capsys):
    study = _study_with_shares({"minent": (0.30, 0.32, 0.34), "maxsquare": (0.25, 0.25, 0.25),
                                "maxsquare_iw": (0.20, 0.22, 0.24)}, pixels=(0.60, 0.70, 0.80))
    above = {"pixels": 0.95, "logits/entropy": 0.35, "logits/maxsquare": 0.25, "logits/maxsquare_iw": 0.40,
             "probs/entropy": 0.7}
    out = A.compare_shares(above, study, seed=1, profile="smoke")
    # std of (a-d, a, a+d) is d: entropy 0.35 - 0.32 = 0.03 <= 3 × 0.02; pixels 0.25 > 3 × 0.1
    assert out["entropy"]["agrees"] is True
    assert out["entropy"]["study_mean"] == pytest.approx(0.32) and out["entropy"]["study_std"] == pytest.approx(0.02)
    assert out["pixels"]["agrees"] is True  # 0.95 − 0.70 = 0.25 <= 3 × 0.1
    assert out["maxsquare_iw"]["agrees"] is False and out["maxsquare_iw"]["difference"] == pytest.approx(0.18)
    # three identical seeds: no spread, so no tolerance and no agreement
    assert out["maxsquare"]["study_std"] == pytest.approx(0.0, abs=1e-15) and out["maxsquare"]["agrees"] is False
    text = capsys.readouterr().out
    assert ("share of entropy (MinEnt)'s logit gradient above max p 0.9 (%): yours 35.0 (one seed (seed 1), "
            "smoke) · study 32.0 ± 2.0 (3 seeds (0, 1, 2)) · agrees (within 3 × the study's seed std, 6.0)") in text
    assert "MaxSquare + IW's logit gradient above max p 0.9 (%): yours 40.0" in text
    assert "differs by +18.0 (more than 3 × the study's seed std, 6.0)" in text
    # a quantity the learner did not measure is left out
    assert set(A.compare_shares({"pixels": 0.7}, study)) == {"pixels"}


def test_the_committed_study_holds_the_step0_shares():
    """The committed figures/results.json carries the probe's step-0 shares the course once typed in
    by hand (mean ± std over seeds 0, 1, 2 of minent, maxsquare, maxsquare_iw, in %)."""
    from maxsq_lib.course import results as R

    study = R.load_committed_study()
    expected = {("minent", "pixels"): (66.843, 0.597), ("minent", "logit_gradient"): (29.971, 0.591),
                ("maxsquare", "logit_gradient"): (25.118, 0.445),
                ("maxsquare_iw", "logit_gradient"): (23.896, 0.373)}
    for (run, quantity), (m, s) in expected.items():
        values = R.start_share_values(study, run, quantity)
        assert sorted(values) == [0, 1, 2]
        got_mean, got_std = R.mean_std(values.values())
        assert 100 * got_mean == pytest.approx(m, abs=5e-4) and 100 * got_std == pytest.approx(s, abs=5e-4)
    # the three loss runs start from the same model: the same pixels
    assert R.start_share_values(study, "maxsquare", "pixels") == R.start_share_values(study, "minent", "pixels")
    # the study's own seed-0 values agree with it
    seed0 = {"pixels": 0.6653, "logits/entropy": 0.2930, "logits/maxsquare": 0.2462, "logits/maxsquare_iw": 0.2348}
    assert all(v["agrees"] for v in A.compare_shares(seed0).values())
