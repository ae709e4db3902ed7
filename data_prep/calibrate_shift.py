"""Calibrate MiniCity's ``shift``: a source model's target mIoU as a function of the shift.

The same MiniCityscapes val layouts are rendered at several shifts (labels identical), passed
through the authors' preprocessing and scored with the project's evaluation, so the curve shows
the effect of appearance alone. Used to choose :data:`data_prep.minicity.DEFAULT_SHIFT`
(source-only on target clearly below source-on-source, well above chance); the curve is shown in
notebook ``01_data``.

Usage::

    python -m data_prep.calibrate_shift runs/cpu/minicity/source_multi/seed0/final.pt --profile cpu
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

from .minicity import PROFILES, render_with_shift  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    from maxsq_lib.course.notebook import config_for
    from maxsq_lib.engine.trainer import build_model, load_weights

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a source model checkpoint (final.pt)")
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--shifts", type=float, nargs="+", default=list(DEFAULT_SHIFTS))
    args = parser.parse_args(argv)
    cfg = config_for(args.profile)
    model = build_model(cfg)
    load_weights(model, args.checkpoint)
    curve = shift_curve(model, args.shifts, images=args.images, render_size=PROFILES[args.profile].size,
                        input_size=tuple(cfg.data.val_size), num_classes=cfg.data.num_classes)
    for s, v in curve.items():
        print(f"shift {s:.2f}: target mIoU {100 * v:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
