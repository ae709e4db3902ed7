"""Calibrate MiniCity's target look: a source model's target mIoU by shift, and by candidate look
before and after AdaBN.

The same MiniCityscapes layouts are rendered in several styles (labels identical), passed through
the authors' preprocessing and scored with the project's evaluation, so each number shows the
effect of appearance alone.

- :func:`shift_curve`: target val mIoU at each ``shift`` (notebook ``01_data`` draws it).
- :func:`look_table`: for each candidate look (:func:`candidate_looks`), the source model's
  target val mIoU, and again after AdaBN (BatchNorm statistics re-estimated on the target train
  layouts rendered in that look). The rule that chose :data:`~maxsq_prep.minicity_style.TARGET_STYLE`,
  stated before the losses were measured: at least 10 points of the gap to source-on-source must
  remain after AdaBN (BatchNorm removes per-channel colour statistics; a target loss needs what
  it cannot undo).

Usage::

    python -m maxsq_prep.calibrate_shift runs/cpu/minicity/source_multi/seed0/final.pt --profile cpu
    python -m maxsq_prep.calibrate_shift runs/cpu/minicity/source_multi/seed0/final.pt --looks
"""

from __future__ import annotations

import argparse
import os
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from maxsq_lib import metrics  # noqa: E402
from maxsq_lib.data.transforms import image_to_tensor, map_label_ids, resize_image, resize_label  # noqa: E402
from maxsq_lib.labels import class_set_for  # noqa: E402

from dataclasses import replace  # noqa: E402

from .minicity import DEFAULT_SHIFT, PROFILES, render_with_shift, render_with_styles  # noqa: E402
from .minicity_style import COLOUR_TARGET_STYLE, SOURCE_STYLE, Style, style_for  # noqa: E402

DEFAULT_SHIFTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


@torch.no_grad()
def shift_curve(model: torch.nn.Module, shifts: Sequence[float] = DEFAULT_SHIFTS, *, images: int = 100,
                seed: int = 0, render_size: tuple[int, int] = (128, 64),
                input_size: tuple[int, int] = (128, 64), num_classes: int = 10,
                batch_size: int = 50) -> dict[float, float]:
    """Target mIoU of ``model`` on MiniCityscapes val layouts rendered at each shift.

    Args:
        model: returns ``(main, aux)`` logits.
        shifts: shift values in [0, 1].
        images: number of val layouts.
        seed: MiniCity seed.
        render_size, input_size: generated size and network input size ``(W, H)``.
        num_classes: class set of the model (10 = MiniCity).
    Returns:
        ``{shift: mIoU}`` as fractions.
    """
    cs = class_set_for(num_classes)
    model.eval()
    confs = {s: torch.zeros(cs.num_classes, cs.num_classes, dtype=torch.long) for s in shifts}
    for start in range(0, images, batch_size):
        stacks = {s: [] for s in shifts}
        labels = []
        for index in range(start, min(images, start + batch_size)):
            rendered, label_ids = render_with_shift(list(shifts), domain="target", split="val",
                                                    index=index, seed=seed, size=render_size)
            labels.append(torch.from_numpy(map_label_ids(resize_label(label_ids, input_size),
                                                         cs.cityscapes_id_lut)))
            for s, rgb in zip(shifts, rendered):
                stacks[s].append(image_to_tensor(resize_image(Image.fromarray(rgb), input_size)))
        target = torch.stack(labels)
        for s in shifts:
            pred = model(torch.stack(stacks[s]))[0].argmax(1)
            confs[s] += metrics.confusion_matrix(pred, target, cs.num_classes)
    return {s: metrics.miou(confs[s]) for s in shifts}


def candidate_looks(shift: float = DEFAULT_SHIFT) -> dict[str, Style]:
    """The candidate target looks of the calibration, one factor at a time, at ``shift``.

    ``a`` is generator version 1's look (:data:`COLOUR_TARGET_STYLE`); ``b`` keeps its texture,
    blur and noise with the source palette and tone (hue, saturation, value, brightness, contrast,
    gamma, cast); ``c``–``f`` strengthen one factor BatchNorm cannot undo; ``g`` all four (the
    version 2 look, :func:`style_for` at the shift); ``h`` all four on version 1's tone.

    Returns:
        name -> :class:`Style`.
    """
    v1 = SOURCE_STYLE.lerp(COLOUR_TARGET_STYLE, shift)
    tone = {f: getattr(SOURCE_STYLE, f) for f in ("hue_deg", "saturation", "value", "brightness",
                                                 "contrast", "gamma", "cast")}
    b = replace(v1, **tone)
    strong = {"low_freq": 0.35, "high_freq": 0.30, "blur": 1.4, "noise": 0.06}
    looks = {"a: version 1": v1, "b: source tone": b}
    for key, (name, value) in zip("cdef", strong.items()):
        looks[f"{key}: b + {name} {value:g}"] = replace(b, **{name: value})
    looks["g: b + all four (version 2)"] = style_for(shift)
    looks["h: a + all four"] = replace(v1, **strong)
    return looks


@torch.no_grad()
def look_table(model: torch.nn.Module, looks: dict[str, Style], *, val_images: int = 200,
               train_images: int = 1000, seed: int = 0, render_size: tuple[int, int] = (128, 64),
               input_size: tuple[int, int] = (128, 64), num_classes: int = 10,
               batch_size: int = 8) -> dict[str, dict[str, float]]:
    """Source-only and AdaBN target val mIoU of ``model`` for each look.

    Args:
        model: a source model (not changed: AdaBN runs on a copy per look).
        looks: name -> style (:func:`candidate_looks`).
        val_images: MiniCityscapes val layouts scored.
        train_images: target train layouts AdaBN re-estimates the statistics on.
        seed, render_size, input_size, num_classes: as :func:`shift_curve`.
        batch_size: images per AdaBN forward pass (the cpu profile's target batch).
    Returns:
        name -> ``{"source_only", "adabn"}`` (fractions).
    """
    import copy

    from maxsq_lib.engine.adabn import reestimate_batchnorm

    cs = class_set_for(num_classes)
    names, styles = list(looks), list(looks.values())

    def tensors(split: str, count: int):
        per_look, labels = [[] for _ in styles], []
        for index in range(count):
            rendered, label_ids = render_with_styles(styles, domain="target", split=split, index=index,
                                                     seed=seed, size=render_size)
            labels.append(torch.from_numpy(map_label_ids(resize_label(label_ids, input_size),
                                                         cs.cityscapes_id_lut)))
            for k, rgb in enumerate(rendered):
                per_look[k].append(image_to_tensor(resize_image(Image.fromarray(rgb), input_size)))
        return [torch.stack(x) for x in per_look], torch.stack(labels)

    def score(net, images, target):
        net.eval()
        conf = torch.zeros(cs.num_classes, cs.num_classes, dtype=torch.long)
        for start in range(0, len(images), 50):
            pred = net(images[start:start + 50])[0].argmax(1)
            conf += metrics.confusion_matrix(pred, target[start:start + 50], cs.num_classes)
        return metrics.miou(conf)

    val, target = tensors("val", val_images)
    train, _ = tensors("train", train_images)
    out = {}
    for k, name in enumerate(names):
        adapted = copy.deepcopy(model)
        reestimate_batchnorm(adapted, _Unlabelled(train[k]), batch_size, "cpu")
        out[name] = {"source_only": score(model, val[k], target), "adabn": score(adapted, val[k], target)}
    return out


def _source_val_miou(checkpoint: str) -> float | None:
    """The source model's source val mIoU from the ``metrics.json`` beside its checkpoint, if any."""
    import json
    from pathlib import Path

    path = Path(checkpoint).parent / "metrics.json"
    if not path.is_file():
        return None
    return (json.loads(path.read_text()).get("source_val") or {}).get("miou")


class _Unlabelled(torch.utils.data.Dataset):
    """Images as ``(image, dummy label, name)`` items, the layout AdaBN reads."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], torch.zeros(1, dtype=torch.long), str(i)


def main(argv: list[str] | None = None) -> int:
    from maxsq_lib import config as C
    from maxsq_lib.checkpoint import load_weights
    from maxsq_lib.engine.build import build_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a source model checkpoint (final.pt)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--shifts", type=float, nargs="+", default=list(DEFAULT_SHIFTS))
    parser.add_argument("--looks", action="store_true",
                        help="the candidate looks before and after AdaBN instead of the shift curve")
    args = parser.parse_args(argv)
    cfg = C.resolve(args.profile)  # only sizes, classes and batch are read: no folders
    model = build_model(cfg)
    load_weights(model, args.checkpoint)
    if args.looks:
        table = look_table(model, candidate_looks(), val_images=min(args.images * 2, 200),
                           render_size=PROFILES[args.profile].size, input_size=tuple(cfg.data.val_size),
                           num_classes=cfg.data.num_classes, batch_size=cfg.adapt.target_batch_size)
        source_val = _source_val_miou(args.checkpoint)
        print("| look | source-only | AdaBN | removed by AdaBN | gap left after AdaBN |")
        print("|---|---|---|---|---|")
        for name, v in table.items():
            gap = "–" if source_val is None else f"{100 * (source_val - v['adabn']):.1f}"
            print(f"| {name} | {100 * v['source_only']:.1f} | {100 * v['adabn']:.1f} | "
                  f"{100 * (v['adabn'] - v['source_only']):+.1f} | {gap} |")
        if source_val is not None:
            print(f"gap = source-on-source val mIoU ({100 * source_val:.1f}, the run's metrics.json) − AdaBN")
        return 0
    curve = shift_curve(model, args.shifts, images=args.images, render_size=PROFILES[args.profile].size,
                        input_size=tuple(cfg.data.val_size), num_classes=cfg.data.num_classes)
    for s, v in curve.items():
        print(f"shift {s:.2f}: target mIoU {100 * v:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
