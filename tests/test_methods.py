"""The one registry of methods: the paper's rows, and a new loss registered through the public API
reaching the command line, a planned job, training and a figure's legend."""

from __future__ import annotations

import pytest
import torch

from conftest import smoke_cfg
from maxsq_lib import losses, methods
from maxsq_lib.engine import make_strategy, read_metrics, run_dir_for, train

TOY = "toy_confidence"


def toy_loss(main, aux, params):
    """Minus the mean top probability: pushes every pixel towards confidence (a teaching toy)."""
    return -torch.softmax(main.float(), 1).amax(1).mean(), {}


@pytest.fixture
def toy():
    row = methods.register_method(TOY, toy_loss, label="toy: −mean max p")
    yield row
    methods.unregister_method(TOY)


def test_the_paper_rows_and_their_losses():
    assert methods.adaptation_methods() == ("adabn", "none", "minent", "maxsquare", "maxsquare_iw",
                                            "maxsquare_iw_multi", "hard")
    assert methods.loss_methods() == ("minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi", "hard")
    assert [methods.get_method(m).uses_aux for m in methods.loss_methods()] == [False, False, False, True, False]
    logits = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    aux = torch.randn(2, 5, 6, 7, generator=torch.Generator().manual_seed(1))
    expected = {"minent": losses.entropy(logits, faithful=True), "maxsquare": losses.max_square(logits, faithful=True),
                "maxsquare_iw": losses.iw_max_square(logits, ratio=0.2, faithful=True)}
    for name, value in expected.items():
        weighted, logs = make_strategy(name, lambda_target=0.5)(logits, aux)
        assert torch.allclose(weighted, 0.5 * value) and torch.allclose(logs["target_loss"], value)
    aux_ce, pseudo = losses.multi_level_guidance(logits, aux, threshold=0.95)
    weighted, logs = make_strategy("maxsquare_iw_multi", lambda_target=0.1, lambda_seg=0.1)(logits, aux)
    assert torch.allclose(weighted, 0.1 * (losses.iw_max_square(logits, ratio=0.2, faithful=True) + 0.1 * aux_ce))
    assert logs["pseudo_label_fraction"] == (pseudo >= 0).float().mean()
    assert make_strategy("adabn")(logits, aux) == (None, {})
    assert methods.label("maxsquare_iw") == "MaxSquare+IW" and methods.color("nobody") == "#999999"
    assert methods.display_rank("source") < methods.display_rank("adabn") < methods.display_rank("hard")


def test_registration_refuses_bad_names_duplicates_and_the_papers_rows():
    with pytest.raises(ValueError, match="lower-case letters"):
        methods.register_method("My Loss", toy_loss)
    with pytest.raises(ValueError, match="already registered"):
        methods.register_method("maxsquare", toy_loss, replace=True)
    with pytest.raises(ValueError, match="must be a function"):
        methods.register_method("not_callable", 3)
    with pytest.raises(ValueError, match="cannot be removed"):
        methods.unregister_method("minent")
    with pytest.raises(ValueError, match="unknown adaptation method 'nobody'"):
        make_strategy("nobody")


def test_a_cell_run_twice_replaces_its_own_loss(toy):
    with pytest.raises(ValueError, match="pass replace=True"):
        methods.register_method(TOY, toy_loss)
    again = methods.register_method(TOY, toy_loss, label="second", replace=True)
    assert methods.get_method(TOY) is again and methods.label(TOY) == "second"


def test_a_registered_loss_reaches_the_cli_a_planned_job_training_and_a_legend(toy, smoke_root, tmp_path):
    from maxsq_lib.cli import build_parser
    from maxsq_lib.course.plans import plan_jobs

    args = build_parser().parse_args(["adapt", "--profile", "smoke", "--method", TOY,
                                      "--match-gradient-to", TOY])
    assert (args.method, args.match_gradient_to) == (TOY, TOY)
    jobs = plan_jobs("smoke", "minicity", (0,), ["adabn", TOY], runs=str(tmp_path),
                     data_root=str(smoke_root))
    toy_job = next(j for j in jobs if j.config.adapt.method == TOY)
    assert toy_job.run_dir == tmp_path / "smoke" / "minicity" / TOY / "seed0"
    assert toy_job.command[:3] == ["adapt", "--method", TOY]

    runs = tmp_path / "trained"
    train(smoke_cfg(smoke_root, runs, "adabn"), "source", progress=False)
    for method in ("adabn", TOY):
        train(smoke_cfg(smoke_root, runs, method), "adapt", progress=False)
    metrics = read_metrics(run_dir_for(smoke_cfg(smoke_root, runs, TOY), "adapt"))
    logged = [r["target_loss"] for r in metrics["train_log"]]
    assert logged and all(-1.0 <= v < 0 for v in logged)  # minus a mean probability

    from maxsq_lib.course.plots.adaptation import training_curves
    from maxsq_lib.course.results import load_records

    fig = training_curves(load_records(runs, "smoke"), methods=("adabn", TOY))
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert "toy: −mean max p" in legend and methods.label("adabn") in legend
