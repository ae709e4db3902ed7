"""The authors' preprocessing and training augmentation, as small pure functions.

Pipeline of one item (docs/authors_code.md §5.2), introduced in notebook ``01_data``:

1. resize the image (bicubic) and the label (nearest) to the configured size ``(W, H)``; the
   aspect ratio is not kept, as in the authors' code;
2. training only: a random horizontal mirror (p = 0.5) of image and label, then a Gaussian blur of
   the image (p = 0.5) with radius ``U(0, 1)`` (``PIL.ImageFilter.GaussianBlur``);
3. RGB -> BGR and subtraction of the Caffe mean :data:`IMG_MEAN_BGR`; no division by a std, so the
   values stay on the 0-255 scale.

Difference from the authors: they mirror before resizing, we mirror after. The mirror then commutes
exactly with the rest of the pipeline (a mirrored item equals the mirrored unaugmented item), and
the two orders agree except for nearest-neighbour ties.

**Reproducible randomness.** The random draws of an item come from a generator seeded with
``(seed, epoch, index)`` (:func:`item_rng`), never from a global or per-worker state. The same item
therefore gets the same augmentation whatever the DataLoader worker count or the order of access,
and a resumed run replays exactly the draws of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFilter

IMG_MEAN_BGR: tuple[float, float, float] = (104.00698793, 116.66876762, 122.67891434)
"""Per-channel mean subtracted from BGR images (the Caffe ImageNet mean used by the authors)."""

Size = tuple[int, int]
"""An image size as ``(W, H)``, the order PIL uses."""


def resize_image(image: Image.Image, size: Size | None) -> Image.Image:
    """Resize an RGB image with bicubic interpolation, as the authors.

    Args:
        image: PIL image.
        size: ``(W, H)``, or None to keep the native size.
    Returns:
        the resized PIL image (the input itself when the size already matches).
    """
    if size is None or tuple(image.size) == tuple(size):
        return image
    return image.resize(tuple(size), Image.BICUBIC)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output position for a nearest-neighbour resize, exactly as PIL.

    Output pixel ``i`` samples the input near ``(i + 0.5) * n_in / n_out``. PIL accumulates the
    position by repeated addition in double precision and truncates, which decides exact ties
    (e.g. 720 -> 55 rows); the same sequential sum is reproduced here so that labels match
    ``Image.resize(..., NEAREST)`` pixel for pixel.

    Args:
        n_in: input length.
        n_out: output length.
    Shape:
        -> (n_out,) int64.
    Returns:
        the source indices.
    """
    step = n_in / n_out
    increments = np.full(n_out, step, dtype=np.float64)
    increments[0] = step * 0.5
    positions = np.add.accumulate(increments)  # sequential, like PIL's loop
    return np.clip(positions.astype(np.int64), 0, n_in - 1)


def resize_label(label: np.ndarray, size: Size | None) -> np.ndarray:
    """Resize a label map with nearest-neighbour sampling (same pixels as PIL's NEAREST).

    Works on any integer dtype, including 16-bit ids and maps that already hold -1.

    Args:
        label: integer array (H, W).
        size: ``(W, H)``, or None to keep the native size.
    Shape:
        (H, W) -> (size[1], size[0]).
    Returns:
        the resized label map (the input itself when the size already matches).
    """
    if size is None or label.shape == (size[1], size[0]):
        return label
    rows, cols = nearest_indices(label.shape[0], size[1]), nearest_indices(label.shape[1], size[0])
    return label[rows[:, None], cols[None, :]]


def map_label_ids(raw_ids: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map dataset label ids to class-set ids with a lookup table; ids outside it become -1.

    Args:
        raw_ids: non-negative integer array (H, W) of dataset label ids (8- or 16-bit).
        lut: (256,) int64 table from :mod:`maxsq_lib.labels` (e.g. ``cityscapes_id_lut``).
    Shape:
        (H, W) -> (H, W) int64.
    Returns:
        class-set ids, -1 for ignore (unmapped ids and ids beyond the table).
    """
    raw_ids = np.asarray(raw_ids)
    if raw_ids.dtype == np.uint8 and len(lut) >= 256:
        return lut[raw_ids]
    out = np.full(raw_ids.shape, -1, dtype=np.int64)
    inside = (raw_ids >= 0) & (raw_ids < len(lut))
    out[inside] = lut[raw_ids[inside]]
    return out


def image_to_tensor(image: Image.Image, mean_bgr: tuple[float, float, float] = IMG_MEAN_BGR) -> torch.Tensor:
    """RGB PIL image -> BGR float tensor minus the mean (no std division), as the authors.

    Args:
        image: PIL image in RGB mode.
        mean_bgr: mean per BGR channel.
    Shape:
        (W, H) image -> (3, H, W) float32.
    Returns:
        the network input tensor.
    """
    array = np.asarray(image, dtype=np.float32)[:, :, ::-1]
    array = array - np.asarray(mean_bgr, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item in one epoch.

    Args:
        seed: the dataset's seed (set by the engine from the run's seed).
        epoch: the current epoch (``set_epoch``).
        index: the item index.
    Returns:
        a generator that depends on these three numbers only.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])


@dataclass(frozen=True)
class Augmentation:
    """The random choices for one training item.

    Args:
        flip: mirror image and label horizontally.
        blur_radius: Gaussian blur radius for the image, or None for no blur.
    """

    flip: bool
    blur_radius: float | None


def draw_augmentation(rng: np.random.Generator, flip_p: float = 0.5, blur_p: float = 0.5) -> Augmentation:
    """Draw the mirror and blur choices of one item.

    Three numbers are always drawn (flip, blur, radius), so changing a probability does not shift
    the other draws.

    Args:
        rng: the item's generator (:func:`item_rng`).
        flip_p: probability of a horizontal mirror (authors: 0.5).
        blur_p: probability of a Gaussian blur (authors: 0.5); 0 disables the blur.
    Returns:
        the :class:`Augmentation`.
    """
    u_flip, u_blur, radius = rng.random(3)
    return Augmentation(flip=bool(u_flip < flip_p), blur_radius=float(radius) if u_blur < blur_p else None)


def apply_augmentation(
    image: Image.Image, label: np.ndarray, augmentation: Augmentation
) -> tuple[Image.Image, np.ndarray]:
    """Apply a drawn augmentation: mirror image and label, then blur the image.

    Args:
        image: resized RGB PIL image.
        label: label map (H', W'); it may have another size than the image (full-resolution labels).
        augmentation: the draws of :func:`draw_augmentation`.
    Returns:
        ``(image, label)`` augmented.
    """
    if augmentation.flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
        label = np.ascontiguousarray(label[:, ::-1])
    if augmentation.blur_radius is not None:
        image = image.filter(ImageFilter.GaussianBlur(radius=augmentation.blur_radius))
    return image, label


def denormalize_bgr(image: np.ndarray, mean_bgr=(104.00699, 116.66877, 122.67891)) -> np.ndarray:
    """Undo the authors' preprocessing for display (the inverse of :func:`image_to_tensor`).

    Args:
        image: float array (3, H, W), BGR, mean subtracted (a dataset item).
    Shape:
        (3, H, W) -> (H, W, 3).
    Returns:
        RGB uint8 image.
    """
    image = np.asarray(image, dtype=np.float32)
    bgr = image + np.asarray(mean_bgr, dtype=np.float32)[:, None, None]
    return np.clip(bgr[::-1].transpose(1, 2, 0), 0, 255).round().astype(np.uint8)
