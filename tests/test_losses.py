"""Tests of maxsq_lib.losses: golden values of the authors' code, analytic gradients, identities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from maxsq_lib import losses as L

# The golden values are float32 results of the authors' code on the same inputs. Scalars must
# agree to 1e-6 relative; gradients (|g| <= 2e-5) to 1e-5 relative + 1e-10 absolute, which is far
# below the size of any constant or formula mistake (those change values by >= 1e-3 relative).
VALUE_RTOL = 1e-6
GRAD_TOL = dict(rtol=1e-5, atol=1e-10)


def _logits_from_probs(probs: list[list[float]]) -> torch.Tensor:
    """(B=1, C, 1, W) logits whose softmax is the given per-pixel probabilities (rows = pixels)."""
    p = torch.tensor(probs, dtype=torch.float64)  # (W, C)
    return p.log().T.reshape(1, p.shape[1], 1, p.shape[0])


def _golden_loss_and_grad(golden, fn):
    _, arrays, _ = golden
    logits = torch.from_numpy(arrays["loss_logits"]).clone().requires_grad_(True)
    value = fn(logits)
    value.backward()
    return value, logits.grad


# ------------------------------------------------------------------------------------- golden ---


@pytest.mark.parametrize(
    "fn, value_key, grad_key",
    [
        (lambda z: L.max_square(z, faithful=True), "maxsquare", "maxsquare_grad"),
        (lambda z: L.iw_max_square(z, ratio=0.2, faithful=True), "iw_maxsquare_ratio0.2", "iw_maxsquare_grad"),
        (lambda z: L.entropy(z, faithful=True), "entropy_mean_over_bchw", "entropy_grad"),
    ],
    ids=["maxsquare", "iw_maxsquare", "entropy"],
)
def test_faithful_losses_match_golden(golden, fn, value_key, grad_key):
    scalars, arrays, _ = golden
    value, grad = _golden_loss_and_grad(golden, fn)
    assert value.item() == pytest.approx(scalars[value_key], rel=VALUE_RTOL)
    torch.testing.assert_close(grad, torch.from_numpy(arrays[grad_key]), **GRAD_TOL)


def test_multi_level_guidance_matches_golden(golden):
    scalars, arrays, _ = golden
    main = torch.from_numpy(arrays["loss_logits"])
    aux = torch.from_numpy(arrays["aux_logits"]).clone().requires_grad_(True)
    loss, pseudo = L.multi_level_guidance(main, aux, threshold=0.95)
    assert torch.equal(pseudo, torch.from_numpy(arrays["multi_pseudo_label"]))
    # the golden fraction is a float32 mean, hence a relative tolerance rather than exactness
    assert (pseudo >= 0).double().mean().item() == pytest.approx(scalars["multi_kept_fraction"], rel=VALUE_RTOL)
    assert loss.item() == pytest.approx(scalars["multi_aux_ce"], rel=VALUE_RTOL)


# ------------------------------------------------------------------------ scales and identities ---


def _random_logits(b=2, c=5, h=4, w=6, scale=3.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, c, h, w, generator=g)).to(dtype)


def test_max_square_is_minus_half_mean_of_squares():
    z = _random_logits()
    p = torch.softmax(z, dim=1)
    expected = -(p**2).sum() / (2 * p.numel())
    torch.testing.assert_close(L.max_square(z), expected)
    torch.testing.assert_close(L.max_square(z, faithful=True), expected)


def test_default_scales_relate_to_faithful_by_documented_constants():
    z = _random_logits(seed=1)
    torch.testing.assert_close(L.max_square(z), L.max_square(z, faithful=True))
    torch.testing.assert_close(L.entropy(z), L.entropy(z, faithful=True))
    torch.testing.assert_close(L.iw_max_square(z), 0.5 * L.iw_max_square(z, faithful=True))


def test_max_square_gradient_wrt_probabilities_is_linear():
    p = torch.softmax(_random_logits(seed=2), dim=1).requires_grad_(True)
    L.max_square_from_probs(p).backward()
    torch.testing.assert_close(p.grad, -p.detach() / p.numel())


def test_max_square_gradient_wrt_logits_by_chain_rule():
    z = _random_logits(seed=3).requires_grad_(True)
    L.max_square(z).backward()
    p = torch.softmax(z.detach(), dim=1)
    # dL/dz_j = sum_i (dL/dp_i) p_i (delta_ij - p_j) with dL/dp_i = -p_i/N
    expected = -(p / p.numel()) * (p - (p**2).sum(dim=1, keepdim=True))
    torch.testing.assert_close(z.grad, expected)


def test_entropy_value_and_extremes():
    z = _random_logits(seed=4)
    p = torch.softmax(z, dim=1)
    torch.testing.assert_close(L.entropy(z), -(p * p.log()).sum() / p.numel())
    c = 7
    uniform = torch.zeros(1, c, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(L.pixel_entropy(uniform), torch.full((1, 2, 2), math.log(c), dtype=torch.float64))
    saturated = torch.tensor([1000.0, -1000.0, 0.0]).reshape(1, 3, 1, 1).requires_grad_(True)
    ent = L.entropy(saturated)
    ent.backward()
    assert ent.item() == 0.0 and torch.isfinite(saturated.grad).all()


@pytest.mark.parametrize("fn", [L.entropy, L.max_square, L.iw_max_square])
def test_gradcheck_float64(fn):
    z = _random_logits(b=2, c=4, h=3, w=3, scale=1.0, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (z,))


def test_iw_ratio_zero_reduces_to_plain_losses():
    z = _random_logits(seed=6)
    torch.testing.assert_close(L.iw_max_square(z, ratio=0.0), L.max_square(z))
    torch.testing.assert_close(L.iw_max_square(z, ratio=0.0, faithful=True), 2 * L.max_square(z, faithful=True))


def _imbalanced_batch(seed=7):
    """4 images whose argmax histograms differ (a different dominant class per image)."""
    z = _random_logits(b=4, c=5, h=6, w=8, scale=1.0, seed=seed)
    for b in range(4):
        z[b, b] += 2.0 + b
    return z


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("fn", [L.iw_max_square])
def test_iw_batch_equals_mean_of_single_images(fn, faithful):
    z = _imbalanced_batch().requires_grad_(True)
    fn(z, ratio=0.2, faithful=faithful).backward()
    singles, grads = [], []
    for b in range(4):
        zb = z.detach()[b : b + 1].clone().requires_grad_(True)
        value = fn(zb, ratio=0.2, faithful=faithful)
        value.backward()
        singles.append(value.detach())
        grads.append(zb.grad)
    batch_value = fn(z.detach(), ratio=0.2, faithful=faithful)
    torch.testing.assert_close(batch_value, torch.stack(singles).mean())
    torch.testing.assert_close(z.grad, torch.cat(grads) / 4)
    # the weights really differ between images, so this is not the trivial uniform case
    weights = L.iw_class_weights(z.detach(), 5)
    assert not torch.allclose(weights[0], weights[1])


def test_iw_class_weights_by_hand():
    labels = torch.tensor([[[0, 0, 1, -1, 0]], [[2, 2, 2, 2, 7]]])  # (B=2, H=1, W=5); -1 and 7 not counted
    w = L.iw_class_weights(labels, num_classes=3, ratio=0.5)
    # image 0: N = 4, N_0 = 3, N_1 = 1, N_2 = 0; image 1: N = 4, N_2 = 4
    expected = torch.tensor(
        [[1 / math.sqrt(3 * 4), 1 / math.sqrt(1 * 4), 1.0], [1.0, 1.0, 1 / 4]], dtype=torch.float64
    )
    torch.testing.assert_close(w, expected)


def test_iw_weights_from_logits_and_pixel_maps():
    z = _imbalanced_batch(seed=8)
    argmax = z.argmax(dim=1)
    from_logits = L.iw_class_weights(z, 5, ratio=0.2)
    torch.testing.assert_close(from_logits, L.iw_class_weights(argmax, 5, ratio=0.2))
    pixel = L.iw_pixel_weights(z, ratio=0.2)
    assert pixel.shape == (4, 6, 8) and not pixel.requires_grad
    torch.testing.assert_close(pixel, torch.gather(from_logits, 1, argmax.reshape(4, -1)).reshape(4, 6, 8))
    # rarer classes weigh more within an image
    counts = torch.stack([torch.bincount(a.flatten(), minlength=5) for a in argmax])
    for b in range(4):
        present = counts[b] > 0
        order = torch.argsort(counts[b][present])
        assert torch.all(from_logits[b][present][order].diff() <= 0)


def test_iw_fused_gradient_matches_autograd_with_detached_weights():
    z = _imbalanced_batch(seed=9).requires_grad_(True)
    L.iw_max_square(z, faithful=True).backward()
    # the same loss through plain autograd, weights as constants
    y = z.detach().clone().requires_grad_(True)
    p = torch.softmax(y, dim=1)
    w = L.iw_pixel_weights(y.detach())  # (B, H, W)
    b, c = y.shape[:2]
    (-(w * (p**2).sum(dim=1)).sum() / (b * c)).backward()
    torch.testing.assert_close(z.grad, y.grad)
    # and its closed form: -(2 w / (B C)) p_j (p_j - sum_i p_i^2)
    p = p.detach()
    closed = -(2 * w.unsqueeze(1) / (b * c)) * p * (p - (p**2).sum(dim=1, keepdim=True))
    torch.testing.assert_close(z.grad, closed)


def test_iw_max_square_backward_twice_with_retain_graph():
    z = _imbalanced_batch(seed=15).requires_grad_(True)
    loss = L.iw_max_square(z)
    loss.backward(retain_graph=True)
    first = z.grad.clone()
    loss.backward()
    torch.testing.assert_close(z.grad, 2 * first)  # saved tensors were not modified in place


# ------------------------------------------------------------------------- cross-entropy family ---


def test_source_cross_entropy_matches_torch_and_handles_all_ignored():
    z = _random_logits(seed=10).requires_grad_(True)
    label = torch.randint(-1, 5, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(L.source_cross_entropy(z, label), F.cross_entropy(z, label, ignore_index=-1))
    loss = L.source_cross_entropy(z, torch.full((2, 4, 6), -1))
    loss.backward()
    assert loss.item() == 0.0 and loss.requires_grad
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_source_cross_entropy_rejects_mismatched_label():
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        L.source_cross_entropy(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


def test_fused_pseudo_label_threshold_or_rule():
    # pixels: main confident only; aux confident only; neither; both, fused argmax != main argmax
    main = _logits_from_probs([[0.97, 0.02, 0.01], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.96, 0.03, 0.01]])
    aux = _logits_from_probs([[0.2, 0.7, 0.1], [0.01, 0.01, 0.98], [0.5, 0.45, 0.05], [0.0001, 0.9998, 0.0001]])
    # fused pixel 0: (0.585, 0.36, 0.055) -> 0; pixel 1: (0.255, 0.205, 0.54) -> 2;
    # pixel 3: (0.48005, 0.5149, 0.00505) -> 1
    pseudo = L.fused_pseudo_label(main, aux, threshold=0.95)
    assert pseudo.tolist() == [[[0, 2, -1, 1]]]
    assert L.fused_pseudo_label(main, aux, threshold=0.99).tolist() == [[[-1, -1, -1, 1]]]


def test_multi_level_loss_is_aux_ce_on_kept_pixels_without_main_gradient():
    main = _random_logits(seed=11, scale=6.0).requires_grad_(True)
    aux = _random_logits(seed=12, scale=6.0).requires_grad_(True)
    loss, pseudo = L.multi_level_guidance(main, aux, threshold=0.9)
    kept = pseudo >= 0
    assert 0 < kept.sum() < kept.numel() and not pseudo.requires_grad
    expected = F.cross_entropy(aux.detach().permute(0, 2, 3, 1)[kept], pseudo[kept])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert main.grad is None and torch.isfinite(aux.grad).all()


def test_multi_level_all_ignored_gives_differentiable_zero():
    main = torch.zeros(2, 4, 3, 3, requires_grad=True)  # uniform: max p = 0.25 < threshold
    aux = torch.zeros(2, 4, 3, 3, requires_grad=True)
    loss, pseudo = L.multi_level_guidance(main, aux)
    assert torch.all(pseudo == -1)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(aux.grad, torch.zeros_like(aux))


def test_hard_pseudo_label_and_loss():
    z = _logits_from_probs([[0.97, 0.02, 0.01], [0.2, 0.1, 0.7], [0.01, 0.96, 0.03]]).requires_grad_(True)
    label = L.hard_pseudo_label(z, threshold=0.95)
    assert label.tolist() == [[[0, -1, 1]]]
    # the `hard` strategy: CE against the confident argmax, 0 when no pixel is confident enough
    from maxsq_lib.engine.strategies import make_strategy

    loss, logs = make_strategy("hard", lambda_target=1.0, threshold=0.95)(z, z)
    assert loss.item() == pytest.approx(-(math.log(0.97) + math.log(0.96)) / 2, rel=1e-9)
    assert float(logs["pseudo_label_fraction"]) == pytest.approx(2 / 3)
    assert make_strategy("hard", lambda_target=1.0, threshold=0.99)(z, z)[0].item() == 0.0


# --------------------------------------------------------------------------- precision, inputs ---


@pytest.mark.parametrize("fn", [L.max_square, L.iw_max_square, L.entropy])
def test_low_precision_logits_are_computed_in_float32(fn):
    z16 = _random_logits(seed=13, dtype=torch.float32).to(torch.bfloat16)
    value = fn(z16)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, fn(z16.float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fn(z16.float()).dtype == torch.float32


def test_bad_logits_shape_raises():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        L.max_square(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="num_classes=5"):
        L.iw_class_weights(torch.zeros(1, 4, 2, 2), num_classes=5)
    with pytest.raises(ValueError, match="differ in shape"):
        L.multi_level_guidance(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisations")
def test_losses_do_not_synchronise_on_cuda():
    z = _imbalanced_batch().float().cuda().requires_grad_(True)
    aux = _random_logits(b=4, c=5, h=6, w=8, seed=14).float().cuda().requires_grad_(True)
    label = torch.randint(-1, 5, (4, 6, 8), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = L.iw_max_square(z) + L.max_square(z) + L.entropy(z)
        total = total + L.multi_level_guidance(z, aux)[0] + L.source_cross_entropy(z, label)
        total = total + L.source_cross_entropy(z, L.hard_pseudo_label(z))
        total.backward()
        L.iw_pixel_weights(z.detach())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(z.grad).all().item()
