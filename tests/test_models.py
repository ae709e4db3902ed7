"""DeepLabv2: the authors' state_dict layout, their forward (golden values), sizes, parameter groups."""

from __future__ import annotations

import warnings
import zlib

import pytest
import torch
from torch import nn

from maxsq_lib.models import (
    SIZE_PRESETS,
    ClassifierModule,
    DeepLabV2,
    count_parameters,
    deeplabv2,
    deeplabv2_from_preset,
    feature_size,
    parameter_groups,
    unwrap_model,
)

HEADS = ("layer5", "layer6")


def meta_model(*args, **kwargs) -> DeepLabV2:
    """A model without storage: enough for names and shapes, and instant even for ResNet-101."""
    with torch.device("meta"):
        return deeplabv2(*args, **kwargs)


def key_shapes(model: nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def golden_weight(key: str, shape: list[int]) -> torch.Tensor:
    """The golden README's rule: one generator per key seeded with crc32(key)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0, dtype=torch.long)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        return torch.randn(shape, generator=g) * (0.5 / fan_in) ** 0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


# ---------------------------------------------------------------------------------------------
# Layout


def test_state_dict_keys_and_shapes_equal_the_authors(golden):
    _, _, keys = golden
    assert len(keys) == 640
    assert key_shapes(meta_model(19, depth=101, aspp_branches=2)) == [(k, list(s)) for k, s in keys]
    # The head fix changes the forward only, never the state_dict.
    assert key_shapes(meta_model(19, depth=101, aspp_branches=4)) == [(k, list(s)) for k, s in keys]


@pytest.mark.parametrize("num_classes", [16, 13])
def test_other_class_counts_change_only_head_shapes(golden, num_classes):
    _, _, keys = golden
    got = key_shapes(meta_model(num_classes, aspp_branches=2))
    assert [k for k, _ in got] == [k for k, _ in keys]
    for (key, shape), (_, ref_shape) in zip(got, keys, strict=True):
        if key.split(".")[0] in HEADS:
            assert shape == [num_classes, *ref_shape[1:]], key
        else:
            assert shape == list(ref_shape), key


def test_resnet50_block_counts():
    model = meta_model(19, depth=50)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]


def test_caffe_style_strides_dilations_and_bias_free_backbone():
    model = meta_model(19)
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    assert model.layer2[0].downsample[0].stride == (2, 2)
    for layer, dilation in ((model.layer3, 2), (model.layer4, 4)):
        for block in layer:  # every block, including the first, is dilated
            assert block.conv2.dilation == (dilation, dilation) and block.conv2.padding == (
                dilation,
                dilation,
            )
            assert block.conv1.stride == (1, 1)
    assert model.maxpool.ceil_mode and model.maxpool.stride == 2 and model.maxpool.padding == 1
    backbone_convs = [
        m for b in model.backbone_modules() for m in b.modules() if isinstance(m, nn.Conv2d)
    ]
    assert len(backbone_convs) == 104 and all(c.bias is None for c in backbone_convs)
    for head, in_channels in ((model.layer5, 1024), (model.layer6, 2048)):
        assert [c.dilation[0] for c in head.conv2d_list] == [6, 12, 18, 24]
        assert [c.padding[0] for c in head.conv2d_list] == [6, 12, 18, 24]
        assert all(c.bias is not None and c.in_channels == in_channels for c in head.conv2d_list)


def test_paper_parameter_count_equals_the_authors_tensors(golden):
    _, _, keys = golden
    expected = sum(
        torch.Size(shape).numel()
        for key, shape in keys
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    model = meta_model(19, aspp_branches=2)
    assert count_parameters(model) == expected
    stem_bn = model.bn1.weight.numel() + model.bn1.bias.numel()
    assert count_parameters(model, trainable_only=True) == expected - stem_bn


# ---------------------------------------------------------------------------------------------
# Forward against the authors' implementation


@pytest.fixture(scope="module")
def golden_resnet(golden):
    """(model with golden weights and 2 summed branches, its input, its state, the golden outputs)."""
    _, arrays, keys = golden
    state = {key: golden_weight(key, shape) for key, shape in keys}
    model = deeplabv2(19, depth=101, aspp_branches=2)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(arrays["model_input"])
    ref = torch.from_numpy(arrays["model_main"]), torch.from_numpy(arrays["model_aux"])
    return model, x, state, ref


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # Tolerance used: rtol 1e-4 and atol 1e-4 * max|expected| (float32, 104 conv layers).
    atol = 1e-4 * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=atol)


def test_forward_matches_the_authors_golden_outputs(golden_resnet):
    model, x, _, (ref_main, ref_aux) = golden_resnet
    with torch.no_grad():
        main, aux = model(x)
    assert main.shape == aux.shape == (1, 19, 65, 97)
    assert_close_relative(main, ref_main)
    assert_close_relative(aux, ref_aux)


def test_four_aspp_branches_differ_and_reduce_to_two_when_extra_branches_are_zero(golden_resnet):
    model2, x, state, (ref_main, ref_aux) = golden_resnet
    model4 = deeplabv2(19, depth=101, aspp_branches=4)
    model4.load_state_dict(state)
    model4.eval()
    with torch.no_grad():
        main4, aux4 = model4(x)
        # Branches 2 and 3 add visibly: far more than the comparison tolerance.
        assert (main4 - ref_main).abs().max() > 0.05 * ref_main.abs().max()
        assert (aux4 - ref_aux).abs().max() > 0.05 * ref_aux.abs().max()
        for head in (model4.layer5, model4.layer6):
            for conv in head.conv2d_list[2:]:
                conv.weight.zero_()
                conv.bias.zero_()
        main4z, aux4z = model4(x)
        main2, aux2 = model2(x)
    torch.testing.assert_close(main4z, main2, rtol=0, atol=1e-5)
    torch.testing.assert_close(aux4z, aux2, rtol=0, atol=1e-5)


@pytest.mark.parametrize("branches", [1, 2, 3, 4])
def test_classifier_sums_exactly_the_first_branches(branches):
    torch.manual_seed(0)
    head = ClassifierModule(8, 5, (1, 2, 3, 4), branches_summed=branches)
    x = torch.randn(2, 8, 7, 9)
    expected = sum(conv(x) for conv in head.conv2d_list[:branches])
    torch.testing.assert_close(head(x), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Sizes


@pytest.mark.parametrize("shape", [(1, 3, 65, 97), (2, 3, 64, 128)])
def test_output_has_input_size_for_any_size(shape):
    torch.manual_seed(0)
    model = deeplabv2(10, preset="minicity").eval()
    with torch.no_grad():
        main, aux = model(torch.randn(shape))
    assert main.shape == aux.shape == (shape[0], 10, *shape[2:])


def test_feature_size_rule_known_values():
    assert feature_size(512, 1024) == (65, 129)  # floor pooling would give 64 x 128
    assert feature_size(720, 1280) == (91, 161)
    assert feature_size(640, 1280) == (81, 161)
    assert feature_size(64, 128) == (9, 17)


@pytest.mark.parametrize("hw", [(512, 1024), (65, 97), (64, 128), (33, 35), (31, 47), (9, 9)])
def test_feature_size_rule_equals_the_layer4_output(hw):
    model = deeplabv2(
        3, aspp_branches=2, blocks=(1, 1, 1, 1), width=2, aspp_dilations=(1, 2)
    ).eval()
    seen = {}
    model.layer4.register_forward_hook(lambda m, i, out: seen.update(l4=out.shape[-2:]))
    model.layer3.register_forward_hook(lambda m, i, out: seen.update(l3=out.shape[-2:]))
    with torch.no_grad():
        model(torch.zeros(1, 3, *hw))
    assert tuple(seen["l4"]) == tuple(seen["l3"]) == feature_size(*hw)


def test_presets_build_run_and_have_the_documented_sizes():
    assert SIZE_PRESETS["paper"] == {} and {"minicity", "minicity_gpu"} <= set(SIZE_PRESETS)
    torch.manual_seed(0)
    minicity = deeplabv2_from_preset("minicity", 10)
    assert 0.2e6 <= count_parameters(minicity) <= 1.5e6
    gpu = deeplabv2(10, preset="minicity_gpu")
    assert count_parameters(gpu) > count_parameters(minicity)
    for model, size in ((minicity, (64, 128)), (gpu, (128, 256))):
        main, aux = model(torch.randn(2, 3, *size))
        (main.square().mean() + aux.square().mean()).backward()
        assert main.shape == (2, 10, *size)
        assert all(p.grad is not None for p in parameter_groups(model, 1.0)[0]["params"])


def test_size_options_override_the_preset_and_bad_arguments_are_named():
    assert deeplabv2(10, preset="minicity", width=8).conv1.out_channels == 8
    model = deeplabv2(10, aspp_branches=3, blocks=(1, 2, 1, 1), width=4, aspp_dilations=(1, 2, 3))
    assert len(model.layer2) == 2 and model.layer6.conv2d_list[0].in_channels == 4 * 8 * 4
    assert model.layer5.conv2d_list[0].in_channels == 4 * 4 * 4
    assert len(model.layer6.conv2d_list) == 3 and model.aspp_branches == 3
    with pytest.raises(ValueError, match="aspp_branches"):
        deeplabv2(10, preset="minicity", aspp_branches=5)
    with pytest.raises(ValueError, match="depth 34"):
        deeplabv2(10, depth=34)
    with pytest.raises(TypeError, match="widht"):
        deeplabv2(10, widht=8)
    with pytest.raises(ValueError, match="minicty"):
        deeplabv2(10, preset="minicty")


# ---------------------------------------------------------------------------------------------
# Initialisation, training mode, parameter groups


def test_initialisation_as_the_authors():
    torch.manual_seed(0)
    model = deeplabv2(19, preset="minicity")
    conv_weights = torch.cat(
        [m.weight.flatten() for m in model.modules() if isinstance(m, nn.Conv2d)]
    )
    assert conv_weights.numel() > 400_000
    assert abs(conv_weights.std().item() - 0.01) < 2e-4 and abs(conv_weights.mean().item()) < 1e-4
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and not m.bias.any()
            assert m.eps == 1e-5 and m.momentum == 0.1
    # Head biases keep PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    conv = model.layer6.conv2d_list[0]
    bound = 1 / (conv.in_channels * 9) ** 0.5
    assert conv.bias.abs().max() <= bound and conv.bias.abs().max() > bound / 4
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["bn1.weight", "bn1.bias"]


def test_batchnorm_statistics_train_including_the_frozen_stem():
    torch.manual_seed(0)
    model = deeplabv2(10, preset="minicity").train()
    model(torch.randn(2, 3, 64, 128) * 50)
    assert model.bn1.running_mean.abs().sum() > 0 and model.bn1.num_batches_tracked == 1
    assert model.layer4[0].bn3.num_batches_tracked == 1


def test_parameter_groups_list_each_trainable_parameter_once():
    model = deeplabv2(10, preset="minicity")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about duplicated parameters
        groups = parameter_groups(model, lr=2.5e-4)
        optimizer = torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9, weight_decay=5e-4)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2.5e-4, 2.5e-3])
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for m in (model.layer5, model.layer6) for p in m.parameters()
    }
    assert id(model.bn1.weight) not in set(ids) and id(model.conv1.weight) in {
        id(p) for p in groups[0]["params"]
    }
    wrapped = nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    assert [[id(p) for p in g["params"]] for g in parameter_groups(wrapped, 1.0)] == [
        [id(p) for p in g["params"]] for g in groups
    ]
    assert parameter_groups(model, 1e-3, head_lr_mult=5.0)[1]["lr"] == pytest.approx(5e-3)


def test_autocast_bfloat16_on_cpu():
    torch.manual_seed(0)
    model = deeplabv2(10, preset="minicity").eval()
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        ref, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _ = model(x)
    assert low.dtype == torch.bfloat16 and low.shape == ref.shape
    assert torch.isfinite(low).all()
    assert (low.float() - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_channels_last_gives_the_same_output():
    torch.manual_seed(0)
    model = deeplabv2(10, preset="minicity").eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        ref, ref_aux = model(x)
        model = model.to(memory_format=torch.channels_last)
        main, aux = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(main, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(aux, ref_aux, rtol=1e-4, atol=1e-5)


def test_forward_without_aux_head_gives_the_same_main_logits():
    model = deeplabv2(num_classes=10, preset="minicity").eval()
    x = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(3))
    main, aux = model(x)
    main_only, none = model(x, with_aux=False)
    assert none is None and aux.shape == main.shape
    torch.testing.assert_close(main_only, main, rtol=0, atol=0)
