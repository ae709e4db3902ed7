"""Typed configs: strict merging, profiles, benchmarks, methods and overrides."""

import pytest

from maxsq_lib import config as C


def test_paper_profile_is_the_authors_recipe():
    cfg = C.resolve("paper", "gta5_cityscapes", "maxsquare")
    a, s = cfg.adapt, cfg.source
    assert (a.optim.name, a.optim.lr, a.optim.momentum, a.optim.weight_decay) == ("sgd", 2.5e-4, 0.9, 5e-4)
    assert a.optim.head_lr_mult == 10.0 and a.optim.poly_power == 0.9
    assert (a.batch_size, a.target_batch_size, a.lambda_target, a.iw_ratio) == (1, 1, 0.1, 0.2)
    assert (a.iterations, a.schedule_horizon) == (29_750, 29_760)
    assert (s.iterations, s.schedule_horizon) == (80_000, 200_000)
    assert cfg.data.source_size == (1280, 720) and cfg.data.target_size == (1024, 512)
    assert cfg.model.preset == "paper"


def test_methods_and_benchmarks_layer_in_order():
    multi = C.resolve("paper", "gta5_cityscapes", "maxsquare_iw_multi")
    assert multi.adapt.lambda_target == 0.09 and multi.data.target_size == (1280, 640)
    assert multi.source.multi is True
    synthia = C.resolve("paper", "synthia_cityscapes", "maxsquare")
    assert synthia.data.num_classes == 16 and synthia.data.source_size == (1280, 760)
    rio = C.resolve("paper", "cityscapes_nthu_rio", "maxsquare_iw")
    assert (rio.data.city, rio.data.num_classes, rio.adapt.threshold) == ("Rio", 13, 0.98)
    assert rio.source_benchmark == "cityscapes_nthu_rome"
    # overrides come last
    cfg = C.resolve("cpu", "minicity", "maxsquare", {"adapt": {"lambda_target": 0.03}})
    assert cfg.adapt.lambda_target == 0.03 and cfg.adapt.method == "maxsquare"


def test_unknown_keys_and_wrong_types_are_named():
    with pytest.raises(C.ConfigError, match=r"overrides: unknown key 'adapt.lambda_targt'; expected one of \[.*'lambda_target'"):
        C.resolve("cpu", overrides={"adapt": {"lambda_targt": 0.1}})
    with pytest.raises(C.ConfigError, match=r"overrides: adapt.iterations: Value 'many' .* could not be converted to Integer"):
        C.resolve("cpu", overrides={"adapt": {"iterations": "many"}})
    with pytest.raises(C.ConfigError, match=r"adapt.optim.lr: .*'fast'"):
        C.resolve("cpu", overrides={"adapt": {"optim": {"lr": "fast"}}})
    with pytest.raises(C.ConfigError, match=r"data.source_size: .*length 3 does not match .* length 2"):
        C.resolve("cpu", overrides={"data": {"source_size": [1, 2, 3]}})
    with pytest.raises(C.ConfigError, match=r"adapt.bn_mode must be one of"):
        C.resolve("cpu", overrides={"adapt": {"bn_mode": "half"}})
    with pytest.raises(C.ConfigError, match="has no benchmark 'nowhere'"):
        C.resolve("cpu", "nowhere")
    with pytest.raises(C.ConfigError, match="unknown profile"):
        C.resolve("laptop")
    with pytest.raises(C.ConfigError, match="schedule_horizon"):
        C.resolve("cpu", overrides={"source": {"iterations": 10, "schedule_horizon": 5}})


def test_yaml_round_trip_and_strict_file(tmp_path):
    cfg = C.resolve("smoke", "minicity_nthu_tokyo", "maxsquare_iw")
    path = C.save(cfg, tmp_path / "config.yaml")
    again = C.from_dict(C.load_yaml(path), str(path))
    assert again == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("adapt:\n  methodd: minent\n")
    with pytest.raises(C.ConfigError, match=r"bad.yaml: unknown key 'adapt.methodd'"):
        C.merge(C.RunConfig(), C.load_yaml(bad), str(bad))
    # the layers are OmegaConf structured configs: merging returns a new, typed object
    merged = C.merge(C.RunConfig(), {"data": {"source_size": [64, 32]}}, "test")
    assert merged.data.source_size == (64, 32) and C.RunConfig().data.source_size == (1280, 720)


def test_parse_override_is_typed():
    assert C.parse_override("adapt.lambda_target=0.05") == {"adapt": {"lambda_target": 0.05}}
    assert C.parse_override("eval.flip=false") == {"eval": {"flip": False}}
    assert C.parse_override("data.source_size=[64, 32]") == {"data": {"source_size": [64, 32]}}
    with pytest.raises(C.ConfigError, match="KEY=VALUE"):
        C.parse_override("adapt.lambda_target")


def test_run_dir_layout_and_tags():
    cfg = C.resolve("cpu", "minicity", "maxsquare", {"seed": 2, "tag": "lambda0.03"})
    assert str(cfg.run_dir("maxsquare-lambda0.03")) == "runs/cpu/minicity/maxsquare-lambda0.03/seed2"
    with pytest.raises(C.ConfigError, match="tag"):
        C.resolve("cpu", overrides={"tag": "../escape"})


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu", "paper"])
def test_benchmarks_that_share_a_source_model_describe_it_alike(profile):
    """Cross-city benchmarks train one source model (``source_benchmark``); each must resolve the
    same source recipe, or its runs would record a source model that was never trained."""
    from maxsq_lib.engine.runs import config_mismatches

    for bench in C.benchmarks_of(profile):
        cfg = C.resolve(profile, bench)
        owner = cfg.source_benchmark
        if owner and owner != bench:
            mismatches = config_mismatches(C.resolve(profile, owner).to_dict(), cfg.to_dict(), "source")
            assert mismatches == [], (bench, mismatches)


def test_one_registry_of_names():
    """The CLI's choices, the loaders, the generator's cities and the runner's tables derive from
    the registry in maxsq_lib.config."""
    import maxsq_prep.minicity as minicity
    from maxsq_lib import data
    from maxsq_lib.cli import build_parser
    from maxsq_lib.course import runner

    assert tuple(data.DATASETS) == C.DATASET_NAMES
    assert minicity.CITIES == data.NTHU_CITIES == C.CITIES
    assert runner.ADAPT_METHODS == C.TABLE_METHODS and runner.CROSS_CITY_METHODS == C.CROSS_CITY_METHODS
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    choices = {a.dest: a.choices for a in sub["adapt"]._actions}
    assert tuple(choices["method"]) == C.METHODS and tuple(choices["profile"]) == C.PROFILES
    assert list(choices["bn_mode"]) == list(C.BN_MODES)
    check = next(a for a in sub["data"]._actions if a.dest == "what").choices["check"]
    assert tuple(next(a.choices for a in check._actions if a.dest == "dataset")) == C.DATASET_NAMES
