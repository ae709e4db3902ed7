"""Typed run configuration: dataclasses, strict YAML merging, profiles and benchmarks.

A run is resolved in layers, each a partial mapping merged strictly into the dataclass tree
(an unknown key or a value of the wrong type is an error that names the key and the source):

1. the dataclass defaults below (the authors' recipe, docs/authors_code.md §2 and §5);
2. the profile file ``maxsq_lib/configs/<profile>.yaml`` (top-level keys);
3. that profile's ``benchmarks.<benchmark>`` section;
4. that profile's ``methods.<method>`` section (adaptation only), then the benchmark's own
   ``methods.<method>`` section (e.g. the cross-city benchmarks keep 1024×512 for Multi, where
   the authors' ``solve_crosscity.py`` forces that size);
5. explicit overrides (CLI flags, papermill parameters), as a nested mapping.

Every run writes the resolved config (``config.yaml``) next to its outputs. Introduced in notebook
``00_setup``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from . import methods as method_registry

CONFIG_DIR = Path(__file__).parent / "configs"

# The registry: every list of names the CLI, the runner and the figures offer derives from these.
PROFILES = ("smoke", "cpu", "gpu", "paper")
"""Configuration profiles, ``configs/<profile>.yaml``."""
MINICITY_PROFILES = ("smoke", "cpu", "gpu")
"""Profiles whose data MiniCity generates (``paper`` reads the real datasets)."""
METHODS = method_registry.adaptation_methods()
"""The paper's adaptation methods (:mod:`maxsq_lib.methods`; checks read the registry at call time,
so a method registered later is accepted too): ``adabn`` re-estimates BatchNorm statistics on
target images and takes no gradient step (Li et al. 2016); ``none`` trains on source while target
batches pass through BatchNorm; the others add a target loss."""
CONTROL_METHODS = ("adabn", "none")
"""The BatchNorm-only controls: every loss method's gain is also paired against them."""
LOSS_METHODS = ("minent", "maxsquare", "maxsquare_iw", "maxsquare_iw_multi")
"""The target losses of the main table, in the paper's order."""
TABLE_METHODS = CONTROL_METHODS + LOSS_METHODS
"""The main table's adaptation rows: the controls, then the losses."""
CROSS_CITY_METHODS = ("adabn", "none", "maxsquare", "maxsquare_iw")
"""Cityscapes → NTHU rows: the controls beside the methods the paper reports there."""
DATASET_NAMES = ("gta5", "synthia", "cityscapes", "nthu")
"""Dataset names in configs and commands (:data:`maxsq_lib.data.DATASETS` holds their loaders)."""
CITIES = ("Rome", "Rio", "Tokyo", "Taipei")
"""The NTHU cities (and MiniCity's four city variants)."""
AMP_CHOICES = ("auto", "none", "bf16", "fp16")
"""Values of ``amp``: ``none`` is float32; ``auto`` follows the device (:mod:`maxsq_lib.engine.precision`)."""
BN_MODES = {
    "train": "BatchNorm in train mode: target batches update the running statistics (the authors)",
    "eval": "BatchNorm in eval mode, its affine parameters still trained (the authors' --freeze_bn)",
    "frozen": "BatchNorm in eval mode and its affine parameters fixed (ours)",
}
"""``adapt.bn_mode`` values and what each does during adaptation."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it and where it came from."""


@dataclass
class DataConfig:
    """Which datasets, where, at what size (W, H)."""

    root: str = "datasets"
    source: str = "gta5"
    target: str = "cityscapes"
    city: str | None = None
    source_split: str = "train"
    target_split: str = "train"
    val_split: str = "val"
    source_size: tuple[int, int] = (1280, 720)
    target_size: tuple[int, int] = (1024, 512)
    val_size: tuple[int, int] = (1024, 512)
    source_val_split: str | None = "val"
    source_val_limit: int | None = 500
    num_classes: int = 19
    augment: bool = True
    blur: bool = True
    workers: int = 2


@dataclass
class ModelConfig:
    """DeepLabv2 size; ``preset`` names an entry of ``maxsq_lib.models.SIZE_PRESETS``."""

    preset: str = "paper"
    aspp_branches: int = 4


@dataclass
class OptimConfig:
    """Optimiser and poly schedule (the authors: SGD 0.9, wd 5e-4, lr 2.5e-4, heads x10)."""

    name: str = "sgd"
    lr: float = 2.5e-4
    head_lr_mult: float = 10.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9


@dataclass
class SourceConfig:
    """Source-only pretraining (train_source.py: 80k iterations on a 200k poly horizon)."""

    iterations: int = 80_000
    schedule_horizon: int = 200_000
    batch_size: int = 1
    multi: bool = False
    lambda_seg: float = 0.1
    init_checkpoint: str | None = "pretrained_model/DeepLab_resnet_pretrained_init-f81d91e8.pth"
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class AdaptConfig:
    """Adaptation (solve_gta5.py): 10 epochs of 2,975 iterations on a 29,760 poly horizon."""

    method: str = "maxsquare"
    iterations: int = 29_750
    schedule_horizon: int = 29_760
    batch_size: int = 1
    target_batch_size: int = 1
    lambda_target: float = 0.1
    lambda_seg: float = 0.1
    threshold: float = 0.95
    iw_ratio: float = 0.2
    faithful_scale: bool = True
    bn_mode: str = "train"
    source_checkpoint: str | None = None
    match_gradient_to: str | None = None
    match_gradient_lambda: float | None = None
    match_gradient_batches: int = 8
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class EvalConfig:
    """Evaluation on the target val split (main head; global confusion matrix)."""

    every: int = 2_975
    source_every: int | None = None
    """Period of source pretraining (None: ``every``); its long curve needs fewer points."""
    flip: bool = False
    batch_size: int = 1
    full_resolution_labels: bool = False
    limit: int | None = None
    bn_statistics: str = "running"
    """BatchNorm statistics an adaptation run is evaluated with: ``running`` (those the loop left,
    the authors'), or ``target``: re-estimated on the target train images before every evaluation
    (AdaBN of the current weights), the BatchNorm handling of the ``adabn`` control, so that a
    method's gain over it is what the training did beyond BatchNorm; ``final.pt`` then holds them."""
    bn_images: int | None = None
    """Target train images the BatchNorm statistics are re-estimated from (``bn_statistics:
    target`` and the ``adabn`` control alike), spread evenly over the list; None: all of them."""
    subsets: list[str] = field(default_factory=list)
    """Lists of the target dataset whose items are part of ``data.val_split`` (MiniCity: ``dev``
    chooses, ``test`` reports); each is scored on its own at every evaluation, in one pass."""


@dataclass
class RunConfig:
    """Everything a run needs; ``config.yaml`` in each run folder is this, resolved."""

    profile: str = "paper"
    benchmark: str = "gta5_cityscapes"
    source_benchmark: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    deterministic: bool = True
    amp: str = "none"
    """Precision: ``none`` (float32), ``bf16`` or ``fp16`` autocast, or ``auto`` (bf16 where the
    device computes it natively, else float32; :mod:`maxsq_lib.engine.precision`). A run records
    the concrete choice in its ``config.yaml`` and the request in ``metrics.json``."""
    channels_last: bool = False
    """Channels-last memory format for the model and its inputs (same values up to float order)."""
    runs_root: str = "runs"
    tag: str | None = None
    log_every: int = 50
    image_every: int = 1_000
    checkpoint_every: int = 1_000
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> "RunConfig":
        """Check values that types alone cannot; returns self."""
        for name, choices in (("profile", PROFILES + ("custom",)),
                              ("adapt.method", method_registry.adaptation_methods()),
                              ("adapt.bn_mode", tuple(BN_MODES)), ("amp", AMP_CHOICES),
                              ("eval.bn_statistics", ("running", "target")), ("model.aspp_branches", (2, 4)),
                              ("source.optim.name", ("sgd", "adam")), ("adapt.optim.name", ("sgd", "adam"))):
            _check_choice(name, _get(self, name), choices)
        if self.adapt.match_gradient_to is not None:
            _check_choice("adapt.match_gradient_to", self.adapt.match_gradient_to,
                          method_registry.loss_methods())
        for name in ("source.iterations", "adapt.iterations", "log_every", "checkpoint_every", "eval.every",
                     "source.batch_size", "adapt.batch_size", "adapt.target_batch_size", "eval.bn_images",
                     "eval.source_every"):
            value = _get(self, name)
            if value is not None and value < 1:  # the last two may be null
                nullable = " or null" if name in ("eval.bn_images", "eval.source_every") else ""
                raise ConfigError(f"{name} must be >= 1{nullable}, got {value}")
        for name in ("source", "adapt"):
            stage = getattr(self, name)
            if stage.schedule_horizon < stage.iterations:
                raise ConfigError(f"{name}.schedule_horizon ({stage.schedule_horizon}) must be >= "
                                  f"{name}.iterations ({stage.iterations})")
        if self.tag is not None and not all(ch.isalnum() or ch in "._-" for ch in self.tag):
            raise ConfigError(f"tag {self.tag!r}: use letters, digits, '.', '_' or '-' only")
        if not 0.0 <= self.adapt.threshold <= 1.0:
            raise ConfigError(f"adapt.threshold must be in [0, 1], got {self.adapt.threshold}")
        for name in ("source_size", "target_size", "val_size"):
            size = getattr(self.data, name)
            if len(size) != 2 or min(size) < 1:
                raise ConfigError(f"data.{name}: expected a list of 2 positive values (W, H), got {list(size)}")
        return self

    def run_dir(self, name: str) -> Path:
        """``<runs_root>/<profile>/<benchmark>/<name>/seed<k>/``."""
        return Path(self.runs_root) / self.profile / self.benchmark / name / f"seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _merge_layer(node, overrides: Mapping[str, Any], source: str):
    """Merge one layer into an OmegaConf structured node; errors name the key and the source."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{source}: expected a mapping, got {overrides!r}")
    try:
        return OmegaConf.merge(node, overrides)
    except ConfigKeyError as exc:
        kind = getattr(exc, "object_type", None)
        choices = sorted(f.name for f in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else []
        raise ConfigError(f"{source}: unknown key {exc.full_key!r}; expected one of {choices}") from None
    except OmegaConfBaseException as exc:
        reason = str(exc).strip().splitlines()[0]
        key = exc.full_key or _failing_key(node, overrides)
        raise ConfigError(f"{source}: {key}: {reason}") from None


def _failing_key(node, overrides: Mapping[str, Any], prefix: str = "") -> str:
    """The dotted key of the value that does not merge (OmegaConf does not say for a tuple of
    the wrong length)."""
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            found = _failing_key(node, value, f"{prefix}{key}.")
            if found != "?":
                return found
            continue
        leaf: dict = {}
        cursor = leaf
        for part in f"{prefix}{key}".split(".")[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[str(key)] = value
        try:
            OmegaConf.merge(node, leaf)
        except OmegaConfBaseException:
            return f"{prefix}{key}"
    return "?"


def merge(obj: Any, overrides: Mapping[str, Any], source: str) -> Any:
    """A dataclass config with a nested mapping merged in, strictly (OmegaConf structured configs:
    unknown keys and values of the wrong type are errors that name the key and ``source``).

    Args:
        obj: a dataclass instance (e.g. :class:`RunConfig`); not changed.
        overrides: nested mapping of field names to values.
        source: where the mapping came from (a file name or "command line"), for messages.
    Returns:
        a new instance of ``obj``'s class.
    """
    node = _merge_layer(OmegaConf.structured(obj), overrides, source)
    return OmegaConf.to_object(node)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping (OmegaConf's safe loader, which reads ``1e-4`` as a number, as YAML 1.2
    does, where PyYAML alone wants ``1.0e-4``); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path)) or {}
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def profile_path(profile: str) -> Path:
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; expected one of {list(PROFILES)}")
    return CONFIG_DIR / f"{profile}.yaml"


def benchmarks_of(profile: str) -> list[str]:
    """Benchmark names declared by a profile."""
    return list(load_yaml(profile_path(profile)).get("benchmarks", {}))


def resolve(profile: str, benchmark: str | None = None, method: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Resolve a run's configuration (see the module docstring for the layers).

    Args:
        profile: ``smoke``, ``cpu``, ``gpu`` or ``paper``.
        benchmark: a key of the profile's ``benchmarks`` (default: its first).
        method: adaptation method; its section in the profile's ``methods`` is applied and
            ``adapt.method`` set. ``None`` or ``"source"`` for source pretraining.
        overrides: nested mapping applied last.
    Returns:
        the validated :class:`RunConfig`.
    """
    path = profile_path(profile)
    data = load_yaml(path)
    benchmarks = data.pop("benchmarks", {}) or {}
    methods = data.pop("methods", {}) or {}
    node = _merge_layer(OmegaConf.structured(RunConfig), data, str(path))
    if benchmark is None:
        if not benchmarks:
            raise ConfigError(f"{path}: declares no benchmarks")
        benchmark = next(iter(benchmarks))
    if benchmark not in benchmarks:
        raise ConfigError(f"profile {profile!r} has no benchmark {benchmark!r}; "
                          f"expected one of {list(benchmarks)}")
    section = dict(benchmarks[benchmark] or {})
    benchmark_methods = section.pop("methods", {}) or {}
    node = _merge_layer(node, {**section, "profile": profile, "benchmark": benchmark},
                        f"{path} benchmarks.{benchmark}")
    if method not in (None, "source"):
        if method not in method_registry.adaptation_methods():
            raise ConfigError(f"unknown method {method!r}; expected one of "
                              f"{list(method_registry.adaptation_methods())}")
        node = _merge_layer(node, methods.get(method) or {}, f"{path} methods.{method}")
        node = _merge_layer(node, benchmark_methods.get(method) or {},
                            f"{path} benchmarks.{benchmark}.methods.{method}")
        node.adapt.method = method
    if overrides:
        node = _merge_layer(node, overrides, "overrides")
    cfg = OmegaConf.to_object(node)
    return cfg.validate()


def from_dict(data: Mapping[str, Any], source: str = "mapping") -> RunConfig:
    """Rebuild a :class:`RunConfig` from a resolved mapping (e.g. a saved ``config.yaml``)."""
    return merge(RunConfig(), data, source).validate()


def save(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write a resolved config as YAML atomically."""
    from .files import write_text_atomic

    return write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def parse_override(text: str) -> dict[str, Any]:
    """``"adapt.lambda_target=0.05"`` -> ``{"adapt": {"lambda_target": 0.05}}`` (an OmegaConf
    dot-list entry: the value is typed as YAML, ``1e-4`` included)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. adapt.lambda_target=0.05")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist([text.strip()]))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override {text!r}: {str(exc).strip().splitlines()[0]}") from None


def parse_overrides(texts) -> dict[str, Any]:
    """Several ``KEY=VALUE`` overrides (:func:`parse_override`) merged into one nested mapping,
    later ones winning: ``maxsq --set``, the notebooks' ``overrides`` and planned jobs."""
    merged: dict[str, Any] = {}
    for text in texts:
        deep_update(merged, parse_override(text))
    return merged


def deep_update(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge nested mappings (``extra`` wins); returns ``base``."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base
