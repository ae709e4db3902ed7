"""DeepLabv2 (Caffe-style ResNet backbone, two ASPP classifier heads), key-compatible with the authors.

The network is the two-head "DeeplabMulti" of the MaxSquare code (docs/authors_code.md §3):

=========  ==============================================  ==========================================
module     what                                            output (ResNet-101, input H x W)
=========  ==============================================  ==========================================
conv1/bn1  7x7 conv stride 2 (no bias), BN, ReLU           64 x H/2 x W/2
(pool)     3x3 max-pool stride 2 padding 1, ceil_mode      64 x ~H/4 x ~W/4
layer1     Bottlenecks, planes 64                          256, same size
layer2     Bottlenecks, planes 128, stride 2               512 x ~H/8 x ~W/8
layer3     Bottlenecks, planes 256, dilation 2             1024, same size
layer4     Bottlenecks, planes 512, dilation 4             2048, same size
layer5     aux ASPP head on layer3 (``conv2d_list.0-3``)   C, upsampled to H x W
layer6     main ASPP head on layer4 (``conv2d_list.0-3``)  C, upsampled to H x W
=========  ==============================================  ==========================================

Caffe style means the stride sits on the first 1x1 convolution of a bottleneck, not on the 3x3.
Every backbone convolution is bias-free; the head convolutions have biases. The module names,
their order and their shapes equal the authors', so their released checkpoints load with
``load_state_dict(strict=True)`` once the ``module.`` prefix of ``DataParallel`` is removed
(see :mod:`maxsq_lib.checkpoint`).

**The ASPP early return.** The authors' head returns from inside its loop, so it sums only the
branches with dilation 6 and 12; the other two exist (and stay at their random init in every
released checkpoint) but never contribute. ``aspp_branches=2`` reproduces this and is needed to
reproduce their numbers from their checkpoints; ``aspp_branches=4`` (the default, for new
training) sums all four branches, as DeepLabv2 intends.

**Sizes.** The same class builds the paper's ResNet-101 and the small CPU models of the course:
``blocks`` (bottlenecks per layer), ``width`` (base planes) and ``aspp_dilations`` are size
options, collected for the course profiles in :data:`SIZE_PRESETS`.

Introduced in notebook ``02_source_pretraining``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLOCKS_BY_DEPTH: dict[int, tuple[int, int, int, int]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                                                         152: (3, 8, 36, 3)}
"""Bottlenecks per layer (layer1..layer4) for the standard ResNet depths."""

PAPER_ASPP_DILATIONS: tuple[int, int, int, int] = (6, 12, 18, 24)
"""Dilation (= padding) of the four ASPP branches of each head in DeepLabv2."""

SIZE_PRESETS: dict[str, dict] = {
    # The authors' DeepLabv2-ResNet-101 (about 43 M parameters with 19 classes).
    "paper": {},
    # A small CPU model for 128x64 images: about 0.53 M parameters (10 classes); a training step
    # (forward + backward) on a batch of 8 at 64x128 takes about 0.13-0.15 s on 2 CPU cores
    # (width 16 took 0.17-0.19 s). Its feature map is 9x17 at output stride 8, so the ASPP
    # dilations are scaled down from 6..24 (for 65x129 maps) to stay inside it.
    "minicity": {"blocks": (1, 1, 2, 1), "width": 12, "aspp_dilations": (1, 2, 3, 4)},
    # A larger model for 256x128 images on a GPU: about 4.6 M parameters, feature map 17x33.
    "minicity_gpu": {"blocks": (2, 2, 4, 2), "width": 32, "aspp_dilations": (2, 4, 6, 8)},
}
"""Named size options for :func:`deeplabv2` (``preset=``); ``"paper"`` is the default ResNet-101."""

_SIZE_OPTION_NAMES = ("blocks", "width", "aspp_dilations")
_HEAD_NAMES = ("layer5", "layer6")
_BACKBONE_NAMES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
CONV_INIT_STD = 0.01
"""Standard deviation of the authors' N(0, std) initialisation of every convolution weight."""


class Bottleneck(nn.Module):
    """Caffe-style ResNet bottleneck: 1x1 (carries the stride), 3x3 (dilated), 1x1 expand x4.

    Args:
        in_channels: channels of the input.
        planes: channels of the two inner convolutions; the output has ``4 * planes``.
        stride: stride of the first 1x1 convolution (and of the downsample branch).
        dilation: dilation and padding of the 3x3 convolution.
        downsample: projection of the identity path (block 0 of each layer), or None.

    Shape:
        x: (B, in_channels, H, W) -> (B, 4*planes, H', W'), H' = floor((H - 1) / stride) + 1.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Attribute order fixes the state_dict order: conv1, bn1, conv2, bn2, conv3, bn3, downsample.
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ClassifierModule(nn.Module):
    """DeepLabv2 ASPP head: parallel dilated 3x3 convolutions (with bias) whose outputs are summed.

    Args:
        in_channels: channels of the feature map.
        num_classes: output channels C.
        dilations: one branch per entry, with dilation = padding = entry.
        branches_summed: how many branches (from the first) enter the sum; ``2`` reproduces the
            authors' early-return bug, ``len(dilations)`` is the intended head.

    Shape:
        x: (B, in_channels, h, w) -> (B, C, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: Sequence[int],
                 branches_summed: int) -> None:
        super().__init__()
        if not 1 <= branches_summed <= len(dilations):
            raise ValueError(f"aspp_branches must be between 1 and {len(dilations)} "
                             f"(number of ASPP dilations {tuple(dilations)}), got {branches_summed}")
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        self.branches_summed = branches_summed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = self.conv2d_list[: self.branches_summed]
        out = branches[0](x)
        for conv in branches[1:]:
            out = out + conv(x)
        return out


def _make_layer(in_channels: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One ResNet stage: ``blocks`` bottlenecks, the first one projecting the identity path.

    Args:
        in_channels: channels entering the stage.
        planes: inner channels; the stage outputs ``4 * planes``.
        blocks: number of bottlenecks (>= 1).
        stride: stride of the first block.
        dilation: dilation of every block's 3x3 convolution (the first block's included).

    Returns:
        ``nn.Sequential`` named ``0..blocks-1``; block 0 has ``downsample.0`` (1x1 conv) and
        ``downsample.1`` (BN).
    """
    out_channels = planes * Bottleneck.expansion
    # The authors also force a projection when the stage is dilated; with these stage widths the
    # channel change already requires one, so block 0 always has it.
    downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(out_channels))
    layers = [Bottleneck(in_channels, planes, stride, dilation, downsample)]
    layers += [Bottleneck(out_channels, planes, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class DeepLabV2(nn.Module):
    """DeepLabv2 with a ResNet backbone and two ASPP heads (aux on layer3, main on layer4).

    Build it with :func:`deeplabv2`. Module names and parameter shapes equal the authors'
    ``DeeplabMulti`` (docs/authors_code.md §3.5), so their checkpoints load strictly.

    Args:
        num_classes: output classes C of both heads.
        blocks: bottlenecks in layer1..layer4.
        width: stem channels and planes of layer1; layer2..4 use 2x, 4x, 8x.
        aspp_dilations: dilations of the ASPP branches of both heads.
        aspp_branches: branches summed by each head (2 = the authors' bug, 4 = intended).

    Shape:
        x: (B, 3, H, W) BGR mean-subtracted image -> (main, aux), each (B, C, H, W) logits.
    """

    def __init__(self, num_classes: int, blocks: Sequence[int], width: int, aspp_dilations: Sequence[int],
                 aspp_branches: int) -> None:
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be four positive counts (layer1..4), got {blocks!r}")
        if width < 1 or num_classes < 1:
            raise ValueError(f"width and num_classes must be positive, got {width}, {num_classes}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        expansion = Bottleneck.expansion
        self.layer1 = _make_layer(width, width, blocks[0], stride=1, dilation=1)
        self.layer2 = _make_layer(width * expansion, width * 2, blocks[1], stride=2, dilation=1)
        self.layer3 = _make_layer(width * 2 * expansion, width * 4, blocks[2], stride=1, dilation=2)
        self.layer4 = _make_layer(width * 4 * expansion, width * 8, blocks[3], stride=1, dilation=4)
        self.layer5 = ClassifierModule(width * 4 * expansion, num_classes, aspp_dilations, aspp_branches)
        self.layer6 = ClassifierModule(width * 8 * expansion, num_classes, aspp_dilations, aspp_branches)
        init_like_authors(self)
        # The authors freeze only the stem BN's affine parameters; its running statistics and all
        # other BN layers keep training.
        for p in self.bn1.parameters():
            p.requires_grad_(False)

    @property
    def aspp_branches(self) -> int:
        """Number of ASPP branches each head sums (2 = the authors' early-return behaviour)."""
        return self.layer6.branches_summed

    def backbone_modules(self) -> list[nn.Module]:
        """The backbone: ``conv1, bn1, layer1, layer2, layer3, layer4`` (optimiser group 0)."""
        return [getattr(self, name) for name in _BACKBONE_NAMES]

    def head_modules(self) -> list[nn.Module]:
        """The two classifier heads: ``layer5`` (aux) and ``layer6`` (main) (optimiser group 1)."""
        return [getattr(self, name) for name in _HEAD_NAMES]

    def forward(self, x: torch.Tensor, with_aux: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of both heads at the input size.

        Args:
            x: (B, 3, H, W) BGR mean-subtracted images.
            with_aux: compute the aux head; ``False`` returns ``(main, None)`` and saves its cost
                where no loss uses it (the engine's passes without multi-level guidance).
        Returns:
            ``(main, aux)`` logits, each (B, C, H, W).
        """
        input_size = x.shape[-2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        aux = upsample_logits(self.layer5(x), input_size) if with_aux else None
        main = self.layer6(self.layer4(x))
        return upsample_logits(main, input_size), aux


def upsample_logits(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling with ``align_corners=True``, as the authors do for both heads.

    Args:
        logits: head output.
        size: target (H, W), the input image size.

    Shape:
        logits: (B, C, h, w) -> (B, C, H, W).

    Returns:
        The upsampled logits.
    """
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def init_like_authors(model: nn.Module, std: float = CONV_INIT_STD) -> None:
    """Initialise as the authors: conv weights N(0, std), conv biases PyTorch default, BN 1 / 0.

    Args:
        model: module whose ``Conv2d`` and ``BatchNorm2d`` submodules are (re)initialised in place.
        std: standard deviation of the convolution weights (0.01 in the authors' code).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def deeplabv2(num_classes: int = 19, depth: int = 101, aspp_branches: int = 4, *, preset: str | None = None,
              **size_options) -> DeepLabV2:
    """Build the two-head DeepLabv2 (``DeeplabMulti``), the paper's ResNet-101 by default.

    Args:
        num_classes: classes of both heads: 19 (GTA5/Cityscapes), 16 (SYNTHIA), 13 (NTHU),
            10 (MiniCity).
        depth: ResNet depth giving the block counts: 50, 101 (the authors' model) or 152.
            Ignored when ``blocks`` is given (directly or by the preset).
        aspp_branches: ASPP branches summed per head. 2 reproduces the authors' early-return
            bug (needed for their checkpoints and numbers); 4 (default) is the intended head.
            The state_dict always holds all branches.
        preset: a key of :data:`SIZE_PRESETS` (``"paper"``, ``"minicity"``, ``"minicity_gpu"``);
            explicit ``size_options`` override its entries.
        **size_options: ``blocks=(b1, b2, b3, b4)``, ``width=64`` (stem channels and layer1
            planes; layers 2-4 use 2x, 4x, 8x; head in-channels follow),
            ``aspp_dilations=(6, 12, 18, 24)``.

    Returns:
        A :class:`DeepLabV2` whose forward returns ``(main, aux)`` logits at the input size.

    Introduced in notebook ``02_source_pretraining``.
    """
    unknown = set(size_options) - set(_SIZE_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown size option(s) {sorted(unknown)}; expected some of "
                        f"{list(_SIZE_OPTION_NAMES)}")
    if preset is not None and preset not in SIZE_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; expected one of {sorted(SIZE_PRESETS)}")
    options = {**SIZE_PRESETS.get(preset, {}), **size_options}
    if "blocks" not in options:
        if depth not in BLOCKS_BY_DEPTH:
            raise ValueError(f"unsupported ResNet depth {depth}; expected one of {sorted(BLOCKS_BY_DEPTH)} "
                             "or explicit blocks=(b1, b2, b3, b4)")
        options["blocks"] = BLOCKS_BY_DEPTH[depth]
    return DeepLabV2(num_classes=num_classes, blocks=tuple(options["blocks"]),
                     width=int(options.get("width", 64)),
                     aspp_dilations=tuple(options.get("aspp_dilations", PAPER_ASPP_DILATIONS)),
                     aspp_branches=aspp_branches)


def deeplabv2_from_preset(name: str, num_classes: int, aspp_branches: int = 4) -> DeepLabV2:
    """Build a DeepLabv2 of a named size; the same as ``deeplabv2(num_classes, preset=name)``.

    Args:
        name: a key of :data:`SIZE_PRESETS`.
        num_classes: classes of both heads.
        aspp_branches: ASPP branches summed per head (2 = authors' bug, 4 = intended).

    Returns:
        The model.
    """
    return deeplabv2(num_classes, aspp_branches=aspp_branches, preset=name)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network inside ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile``.

    Args:
        model: a module, possibly wrapped (several times).

    Returns:
        The innermost module (the one whose state_dict keys have no ``module.`` prefix).
    """
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _parameters_of(modules: Iterable[nn.Module], trainable_only: bool) -> list[nn.Parameter]:
    params = [p for m in modules for p in m.parameters()]
    return [p for p in params if p.requires_grad or not trainable_only]


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float = 10.0) -> list[dict]:
    """SGD parameter groups of the authors: backbone at ``lr``, heads at ``head_lr_mult * lr``.

    Group 0 (``name="backbone"``) holds the trainable parameters of conv1, bn1 (frozen, so
    none), layer1-4; group 1 (``name="heads"``) holds layer5 and layer6. Each group also carries
    ``lr_mult`` (1 and ``head_lr_mult``), so a scheduler can set ``lr = base_lr * lr_mult``.

    Every parameter is listed once. The authors' group-0 generator walked ``modules()`` and
    yielded each module's recursive ``parameters()``, so their SGD saw every backbone tensor 3-4
    times (docs/authors_code.md §3.4, §9.2); that depends on the PyTorch version and is not
    replicated here.

    Args:
        model: a :class:`DeepLabV2`, possibly wrapped in DDP / DataParallel / torch.compile.
        lr: base learning rate (2.5e-4 in the paper).
        head_lr_mult: learning-rate multiplier of the heads (10 in the paper).

    Returns:
        ``[{"params", "lr", "lr_mult", "name"}, ...]`` for ``torch.optim.SGD``.

    Introduced in notebook ``02_source_pretraining``.
    """
    net = unwrap_model(model)
    if not isinstance(net, DeepLabV2):
        raise TypeError(f"parameter_groups expects a DeepLabV2 model, got {type(net).__name__}")
    return [{"params": _parameters_of(net.backbone_modules(), trainable_only=True), "lr": lr, "lr_mult": 1.0,
             "name": "backbone"},
            {"params": _parameters_of(net.head_modules(), trainable_only=False), "lr": lr * head_lr_mult,
             "lr_mult": head_lr_mult, "name": "heads"}]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of a model (unwrapped).

    Args:
        model: the model.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The number of scalars.
    """
    return sum(p.numel() for p in _parameters_of([unwrap_model(model)], trainable_only))


def _conv_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    span = size + 2 * padding - kernel
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    # PyTorch drops a last ceil-mode window that would start inside the right padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def feature_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the layer3/layer4 feature map (output stride 8) for an input size.

    The stem conv (7x7, stride 2, pad 3), the ceil-mode max-pool (3x3, stride 2, pad 1) and the
    stride-2 1x1 conv of layer2 each roughly halve the size; later layers keep it.
    1024x512 (W x H) gives 129x65, 1280x720 gives 161x91.

    Args:
        height: input height H.
        width: input width W.

    Returns:
        (h, w) of the feature map the heads see.
    """

    def one_axis(n: int) -> int:
        n = _conv_out(n, 7, 2, 3)
        n = _conv_out(n, 3, 2, 1, ceil_mode=True)
        return _conv_out(n, 1, 2, 0)

    return one_axis(height), one_axis(width)
