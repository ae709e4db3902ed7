"""The explorer of notebook 07: every panel against the library's own functions, the histogram
totals, caching, bad inputs, deterministic rendering, the ipywidgets UI reacting to its controls,
and discovery of finished runs on a tiny run trained here (never the project's runs/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxsq_lib import config as C
from maxsq_lib import losses
from maxsq_lib.course.explorer import (PANEL_KEYS, SOURCE, WIDGET_CHILDREN, Explorer, class_histogram,
                                find_explorable_runs)
from maxsq_lib.labels import CLASS_SETS, IGNORE_COLOR, IGNORE_INDEX, colorize
from maxsq_lib.models import deeplabv2_from_preset

H, W, C10 = 32, 64, 10


class CountingModel(torch.nn.Module):
    """Wraps a model and counts forward passes (to check the prediction cache)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


class BrokenModel(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("this model is broken on purpose")


def fake_val_set(n: int = 3, seed: int = 0) -> list:
    """Items shaped like the target val set's: (image (3, H, W) float32, label (H, W) int64, name)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for k in range(n):
        image = torch.randn(3, H, W, generator=g) * 40.0
        label = torch.randint(0, C10, (H, W), generator=g)
        label[:4] = IGNORE_INDEX  # a band of ignored pixels
        items.append((image, label, f"img{k}"))
    return items


def smoke_config(**extra) -> C.RunConfig:
    return C.resolve("smoke", "minicity", None, {"threads": 1, **extra})


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    torch.manual_seed(0)
    models = {"a": CountingModel(deeplabv2_from_preset("minicity", C10)),
              "b": CountingModel(deeplabv2_from_preset("minicity", C10)),
              "broken": BrokenModel()}
    return Explorer(smoke_config(), "cpu", models=models, dataset=fake_val_set())


def direct_logits(ex: Explorer, method: str, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        main, aux = ex.model(method)(ex.dataset[index][0][None])[:2]
    return main.float(), aux.float()


# ----------------------------------------------------------------------------------- panels

def test_panel_shapes_and_types(explorer):
    p = explorer.panels(1, "a", threshold=0.5, alpha=0.2)
    assert set(p) == set(PANEL_KEYS)
    assert p["image"].shape == (H, W, 3) and p["image"].dtype == np.uint8
    for key in ("label", "prediction", "entropy", "max_square", "iw_weight", "pseudo_label"):
        assert p[key].shape == (H, W), key
    assert p["probabilities"].shape == (C10, H, W)
    assert p["predicted_counts"].shape == p["label_counts"].shape == (C10,)
    np.testing.assert_array_equal(p["label"], explorer.dataset[1][1].numpy())


def test_maps_equal_the_library_and_the_formulas(explorer):
    main, aux = direct_logits(explorer, "a", 2)
    p = explorer.panels(2, "a", threshold=0.3, alpha=0.35)
    probs = torch.softmax(main, dim=1)[0].numpy()
    np.testing.assert_allclose(p["probabilities"], probs, rtol=1e-5, atol=1e-7)
    # max-square map = Σ_c p² from the probabilities, and = losses.pixel_square_sum
    np.testing.assert_allclose(p["max_square"], (p["probabilities"] ** 2).sum(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p["max_square"], losses.pixel_square_sum(main)[0].numpy(), rtol=1e-5)
    assert p["max_square"].min() >= 1.0 / C10 - 1e-6 and p["max_square"].max() <= 1.0 + 1e-6
    # normalised entropy
    ent = -(probs * np.log(probs)).sum(0) / math.log(C10)
    np.testing.assert_allclose(p["entropy"], ent, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(p["prediction"], probs.argmax(0))
    # IW weights = losses.iw_pixel_weights at the chosen α
    np.testing.assert_array_equal(p["iw_weight"], losses.iw_pixel_weights(main, ratio=0.35)[0].numpy())
    # and the closed form (N / N_c)^α / N, with N_c the predicted histogram
    n = H * W
    expected = (n / p["predicted_counts"][p["prediction"]]) ** 0.35 / n
    np.testing.assert_allclose(p["iw_weight"], expected, rtol=1e-12)
    # pseudo-labels = losses.fused_pseudo_label at the threshold
    np.testing.assert_array_equal(p["pseudo_label"],
                                  losses.fused_pseudo_label(main, aux, 0.3)[0].numpy())


def test_alpha_and_threshold_limits(explorer):
    p0 = explorer.panels(0, "b", threshold=0.0, alpha=0.0)
    np.testing.assert_allclose(p0["iw_weight"] * H * W, 1.0, rtol=1e-12)  # α = 0: uniform 1/N
    assert (p0["pseudo_label"] != IGNORE_INDEX).all()  # δ = 0 keeps every pixel
    main, aux = direct_logits(explorer, "b", 0)
    fused = ((torch.softmax(main, 1) + torch.softmax(aux, 1)) / 2).argmax(1)[0].numpy()
    np.testing.assert_array_equal(p0["pseudo_label"], fused)
    p1 = explorer.panels(0, "b", threshold=1.0, alpha=1.0)
    assert (p1["pseudo_label"] == IGNORE_INDEX).all()  # nothing is more confident than 1
    # α = 1: weight 1/N_c, so each predicted class's weights sum to 1
    for c in np.unique(p1["prediction"]):
        assert p1["iw_weight"][p1["prediction"] == c].sum() == pytest.approx(1.0, rel=1e-9)


def test_histograms_sum_to_pixel_counts(explorer):
    p = explorer.panels(1, "b")
    assert p["predicted_counts"].sum() == H * W
    assert p["label_counts"].sum() == int((p["label"] != IGNORE_INDEX).sum()) == (H - 4) * W
    np.testing.assert_array_equal(p["predicted_counts"], np.bincount(p["prediction"].ravel(), minlength=C10))
    np.testing.assert_array_equal(class_histogram(np.array([[-1, 0, 2], [2, 9, 11]]), 10),
                                  [1, 0, 2, 0, 0, 0, 0, 0, 0, 1])


def test_defaults_come_from_the_config(explorer):
    assert explorer.default_threshold == pytest.approx(0.95)
    assert explorer.default_alpha == pytest.approx(0.2)
    a = explorer.panels(1, "a")
    b = explorer.panels(1, "a", threshold=0.95, alpha=0.2)
    for key in PANEL_KEYS:
        np.testing.assert_array_equal(a[key], b[key])


def test_predictions_are_cached_per_method_and_image():
    models = {"m": CountingModel(deeplabv2_from_preset("minicity", C10))}
    ex = Explorer(smoke_config(), "cpu", models=models, dataset=fake_val_set(2))
    ex.panels(0, "m", 0.5, 0.2)
    ex.panels(0, "m", 0.9, 0.7)
    ex.render(0, "m", 0.1, 0.0)
    assert models["m"].calls == 1
    ex.panels(1, "m")
    assert models["m"].calls == 2


def test_bad_inputs_are_named(explorer):
    with pytest.raises(IndexError, match="3 images"):
        explorer.panels(3, "a")
    with pytest.raises(ValueError, match="unknown method 'minent'.*a, b, broken"):
        explorer.panels(0, "minent")
    with pytest.raises(ValueError, match="threshold"):
        explorer.panels(0, "a", threshold=1.5)
    with pytest.raises(ValueError, match="alpha"):
        explorer.panels(0, "a", alpha=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        explorer.threshold_sweep("a", [0.5, 1.2])
    with pytest.raises(ValueError, match="at least one model"):
        Explorer(smoke_config(), "cpu", models={}, dataset=fake_val_set(1))


def test_threshold_sweep_trades_quantity_for_quality(explorer):
    deltas = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    sweep = explorer.threshold_sweep("a", deltas, image_indices=[0, 1, 2])
    assert np.all(np.diff(sweep["kept"]) <= 0)
    assert sweep["kept"][0] == 1.0 and sweep["kept"][-1] == 0.0 and math.isnan(sweep["accuracy"][-1])
    # at δ = 0 the accuracy is that of the fused argmax over all labelled pixels
    right = total = 0
    for k in range(3):
        main, aux = direct_logits(explorer, "a", k)
        fused = ((torch.softmax(main, 1) + torch.softmax(aux, 1)) / 2).argmax(1)[0]
        label = explorer.dataset[k][1]
        right += int(((fused == label) & (label != IGNORE_INDEX)).sum())
        total += int((label != IGNORE_INDEX).sum())
    assert sweep["accuracy"][0] == pytest.approx(right / total)


# ----------------------------------------------------------------------------------- colours

def test_ignore_colour_is_no_class_colour_of_any_class_set():
    for cs in CLASS_SETS.values():
        colors = np.asarray(cs.colors, dtype=np.float64)
        assert IGNORE_COLOR not in cs.colors, cs.name
        # not merely different: far enough to be told apart (magenta would be 43 from sidewalk)
        distance = np.linalg.norm(colors - np.asarray(IGNORE_COLOR), axis=1)
        assert distance.min() > 100, (cs.name, cs.class_names[int(distance.argmin())])


@pytest.mark.parametrize("name", sorted(CLASS_SETS))
def test_colourised_ignored_pixels_show_the_ignore_colour(name):
    cs = CLASS_SETS[name]
    label = np.tile(np.arange(cs.num_classes), (3, 1))
    label[1, ::2] = IGNORE_INDEX
    rgb = colorize(label, cs)
    ignored = label == IGNORE_INDEX
    assert (rgb[ignored] == IGNORE_COLOR).all()
    assert not (rgb[~ignored] == IGNORE_COLOR).all(axis=-1).any()


def test_explorer_legend_names_the_ignore_colour(explorer):
    fig = explorer.figure(0, "a", 0.5, 0.2)
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[-1] == "ignored / not kept (white)"
    assert tuple(round(255 * v) for v in legend.legend_handles[-1].get_facecolor()[:3]) == IGNORE_COLOR
    # the label panel shows the ignore colour exactly where the label is -1 (the band of rows 0-3)
    label_image = fig.axes[1].get_images()[0].get_array()
    assert (np.asarray(label_image[:4]) == IGNORE_COLOR).all()


# ----------------------------------------------------------------------------------- rendering

def test_render_is_a_deterministic_png_that_follows_the_inputs(explorer):
    png = explorer.render(0, "a", 0.5, 0.2)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    explorer.clear_cache()  # predict and draw again from scratch
    assert explorer.render(0, "a", 0.5, 0.2) == png
    assert explorer.render(0, "a", 0.05, 0.2) != png
    assert explorer.render(0, "a", 0.5, 0.9) != png


def test_widget_controls_redraw_the_figure(explorer):
    ui = explorer.widget(image_index=0, method="a", threshold=0.9, alpha=0.2)
    kids = dict(zip(WIDGET_CHILDREN, ui.children))
    assert len(ui.children) == len(WIDGET_CHILDREN)
    assert type(kids["image"]).__name__ == "IntSlider" and kids["image"].max == 2
    assert type(kids["method"]).__name__ == "Dropdown"
    assert list(kids["method"].options) == ["a", "b", "broken"]
    assert type(kids["figure"]).__name__ == "Image"
    first, first_status = kids["figure"].value, kids["status"].value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and "δ = 0.90" in first_status
    kids["threshold"].value = 0.05  # what moving the slider in the browser does
    after_threshold = kids["figure"].value
    assert after_threshold != first
    assert "δ = 0.05" in kids["status"].value and kids["status"].value != first_status
    kids["alpha"].value = 0.8
    assert kids["figure"].value != after_threshold and "α = 0.80" in kids["status"].value
    kids["image"].value = 2
    kids["method"].value = "b"
    assert "img2" in kids["status"].value and "<b>b</b>" in kids["status"].value
    assert kids["figure"].value == explorer.render(2, "b", 0.05, 0.8)


def test_widget_shows_errors_instead_of_losing_them(explorer):
    ui = explorer.widget(image_index=0, method="a")
    kids = dict(zip(WIDGET_CHILDREN, ui.children))
    before = kids["figure"].value
    kids["method"].value = "broken"
    assert "error" in kids["status"].value and "broken on purpose" in kids["status"].value
    assert kids["figure"].value == before  # the last good figure stays
    kids["method"].value = "b"
    assert "error" not in kids["status"].value


# ----------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A smoke MiniCity and a 4-iteration source + MaxSquare run, trained here (a few seconds)."""
    from maxsq_prep.minicity import generate_minicity
    from maxsq_lib.engine import train

    base = tmp_path_factory.mktemp("explorer")
    root, runs = base / "minicity-smoke", base / "runs"
    generate_minicity(root, profile="smoke", progress=False)
    overrides = {"runs_root": str(runs), "data": {"root": str(root)}, "threads": 1}
    train(C.resolve("smoke", "minicity", None, overrides), "source", progress=False)
    train(C.resolve("smoke", "minicity", "maxsquare", overrides), "adapt", progress=False)
    unfinished = runs / "smoke" / "minicity" / "minent" / "seed0"
    unfinished.mkdir(parents=True)
    (unfinished / "last.pt").write_bytes(b"")  # an interrupted run: not explorable
    return C.resolve("smoke", "minicity", None, overrides)


def test_finds_finished_runs_and_loads_their_models(tiny_runs):
    from maxsq_lib import course

    runs = find_explorable_runs(tiny_runs)
    assert list(runs) == [SOURCE, "maxsquare"]
    assert runs[SOURCE].parent.name == "source_multi"
    ex = Explorer(tiny_runs, "cpu")
    assert ex.methods == [SOURCE, "maxsquare"] and len(ex) == 4
    model = course.load_run_model(C.resolve("smoke", "minicity", "maxsquare",
                                            {"runs_root": tiny_runs.runs_root,
                                             "data": {"root": tiny_runs.data.root}}), "adapt")
    image, label, _ = ex.dataset[1]
    with torch.no_grad():
        main = model(image[None])[0]
    p = ex.panels(1, "maxsquare", 0.9, 0.2)
    np.testing.assert_allclose(p["probabilities"], torch.softmax(main, 1)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert p["label_counts"].sum() == int((label != IGNORE_INDEX).sum())
    # the source model differs from the adapted one
    assert not np.array_equal(ex.panels(1, SOURCE, 0.9, 0.2)["probabilities"], p["probabilities"])


def test_no_runs_is_a_clear_error(tmp_path):
    cfg = smoke_config(runs_root=str(tmp_path / "runs"))
    assert find_explorable_runs(cfg) == {}
    with pytest.raises(FileNotFoundError, match="no finished run to explore.*source"):
        Explorer(cfg, "cpu", dataset=fake_val_set(1))
