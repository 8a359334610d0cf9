"""SSLResNetModel against torchvision, its export to / import from transformers.ResNetModel, torchvision checkpoint
loading, and any transformers vision model as a method's backbone."""

import math

import pytest
import torch
import torchvision
from torch import nn
from transformers import AutoModel, BertConfig, ConvNextConfig, ConvNextModel, IJepaConfig, ResNetConfig, ResNetModel

import hf_ssl  # noqa: F401  (registers the Auto classes)
from hf_ssl import DinoConfig, DinoModel, SSLResNetConfig, SSLResNetModel
from hf_ssl.backbones import TransformersBackbone, feature_dim
from hf_ssl.convert.resnet import (
    resnet_from_transformers,
    resnet_state_dict_from_torchvision,
    resnet_to_transformers,
    transformers_resnet_config,
)

ATOL = 1e-5


def randomize_batch_norms_(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so that a wrong mapping of any
    BatchNorm tensor changes the eval-mode output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(7)


def torchvision_pair(name: str, **config_kwargs):
    """A random torchvision ResNet (classifier replaced by the identity) and our model loaded from it (strict)."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)()
    reference.fc = nn.Identity()
    randomize_batch_norms_(reference)
    ours = SSLResNetModel(SSLResNetConfig.from_name(name, **config_kwargs))
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference.eval(), ours.eval()


@pytest.fixture(scope="module", params=["resnet18", "resnet50"])
def pair(request):
    return torchvision_pair(request.param)


@pytest.mark.parametrize("size", [32, 64])
def test_features_equal_torchvision(pair, size):
    reference, ours = pair
    pixels = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference(pixels)
        out = ours(pixels, output_hidden_states=True)
    assert (out.pooler_output - expected).abs().max() <= ATOL
    assert out.last_hidden_state.shape == (2, ours.config.hidden_size, math.ceil(size / 32), math.ceil(size / 32))
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=(2, 3)))
    assert len(out.hidden_states) == 5 and out.hidden_states[-1] is out.last_hidden_state
    assert [h.shape[1] for h in out.hidden_states] == [64, *ours.config.hidden_sizes]


def test_state_dict_is_torchvision_without_fc():
    for name in ("resnet34", "wide_resnet50_2", "resnet101"):
        with torch.device("meta"):
            reference = getattr(torchvision.models, name)()
            ours = SSLResNetModel(SSLResNetConfig.from_name(name))
        expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
        assert {k: v.shape for k, v in ours.state_dict().items()} == expected, name


@pytest.mark.slow
def test_wide_resnet_equals_torchvision():
    reference, ours = torchvision_pair("wide_resnet50_2")
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (ours(pixels).pooler_output - reference(pixels)).abs().max() <= ATOL


def test_init_follows_torchvision():
    torch.manual_seed(0)
    model = SSLResNetModel(SSLResNetConfig.from_name("resnet50", zero_init_residual=True))
    conv = model.layer4[0].conv2.weight  # fan_out = 512 * 3 * 3
    assert abs(conv.std().item() / math.sqrt(2 / (512 * 9)) - 1) < 0.02
    assert abs(conv.mean().item()) < 1e-3
    for block in (*model.layer1, *model.layer4):
        assert torch.all(block.bn3.weight == 0) and torch.all(block.bn1.weight == 1)
        assert torch.all(block.bn1.bias == 0) and torch.all(block.bn1.running_var == 1)
    plain = SSLResNetModel(SSLResNetConfig(depth=18))
    assert torch.all(plain.layer1[0].bn2.weight == 1)
    zero_init = SSLResNetModel(SSLResNetConfig(depth=18, zero_init_residual=True))
    assert all(torch.all(block.bn2.weight == 0) for block in zero_init.layer2)


def test_save_and_load_through_auto_model(tmp_path):
    _, ours = torchvision_pair("resnet18")
    ours.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SSLResNetModel) and loaded.config.depth == 18
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).pooler_output, ours(pixels).pooler_output, rtol=0, atol=0)
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_cifar_stem_shapes():
    model = SSLResNetModel(SSLResNetConfig(depth=18, cifar_stem=True, num_channels=1)).eval()
    assert model.conv1.weight.shape == (64, 1, 3, 3) and isinstance(model.maxpool, nn.Identity)
    out = model(torch.randn(2, 1, 28, 28), output_hidden_states=True)
    sides = [h.shape[-1] for h in out.hidden_states]
    assert sides == [28, 28, 14, 7, 4]
    assert out.last_hidden_state.shape == (2, 512, 4, 4) and out.pooler_output.shape == (2, 512)


def test_return_tuple_and_channels_last():
    torch.manual_seed(0)
    ours = SSLResNetModel(SSLResNetConfig(depth=18)).eval()
    randomize_batch_norms_(ours)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = ours(pixels)
        last, pooled = ours(pixels, return_dict=False)
        ours.config.channels_last = True
        fast = ours(pixels)
    assert torch.equal(last, expected.last_hidden_state) and torch.equal(pooled, expected.pooler_output)
    assert fast.last_hidden_state.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast.pooler_output, expected.pooler_output, rtol=1e-5, atol=1e-5)  # other kernels


def test_export_to_transformers_gives_equal_features(pair):
    _, ours = pair
    exported = resnet_to_transformers(ours)
    assert type(exported) is ResNetModel
    for size in (32, 48):
        pixels = torch.randn(2, 3, size, size)
        with torch.no_grad():
            expected = ours(pixels, output_hidden_states=True)
            out = exported(pixels, output_hidden_states=True)
        assert (out.last_hidden_state - expected.last_hidden_state).abs().max() <= ATOL
        assert (out.pooler_output.flatten(1) - expected.pooler_output).abs().max() <= ATOL
        for theirs, mine in zip(out.hidden_states, expected.hidden_states, strict=True):
            assert (theirs - mine).abs().max() <= ATOL

    imported = resnet_from_transformers(exported)
    assert imported.config.depth == ours.config.depth
    for key, value in ours.state_dict().items():
        assert torch.equal(imported.state_dict()[key], value), key


def test_import_from_transformers_and_export_of_a_method_model(tmp_path):
    torch.manual_seed(0)
    reference = ResNetModel(transformers_resnet_config(SSLResNetConfig(depth=18)))
    randomize_batch_norms_(reference)
    reference.save_pretrained(tmp_path)
    reference = AutoModel.from_pretrained(tmp_path).eval()
    imported = resnet_from_transformers(reference)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (imported(pixels).pooler_output - reference(pixels).pooler_output.flatten(1)).abs().max() <= ATOL

    dino = DinoModel(DinoConfig(backbone_config=SSLResNetConfig(depth=18))).eval()
    with torch.no_grad():
        exported = resnet_to_transformers(dino)(pixels).pooler_output.flatten(1)
        assert (exported - dino(pixels).pooler_output).abs().max() <= ATOL


def test_what_transformers_resnet_cannot_express():
    with pytest.raises(ValueError, match="CIFAR stem"):
        resnet_to_transformers(SSLResNetModel(SSLResNetConfig(depth=18, cifar_stem=True)))
    with pytest.raises(ValueError, match="width_per_group"):
        with torch.device("meta"):
            wide = SSLResNetModel(SSLResNetConfig.from_name("wide_resnet50_2"))
        resnet_to_transformers(wide)
    v1 = ResNetModel(ResNetConfig(depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], layer_type="basic",
                                  downsample_in_first_stage=True))
    with pytest.raises(ValueError, match="downsample_in_first_stage"):
        resnet_from_transformers(v1)
    with pytest.raises(ValueError, match="none of torchvision"):
        resnet_from_transformers(ResNetModel(ResNetConfig(depths=[1, 1], hidden_sizes=[8, 16], embedding_size=8)))
    with pytest.raises(TypeError, match="SSLResNetModel"):
        resnet_to_transformers(ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)))


def test_torchvision_state_dict_with_prefix():
    with torch.device("meta"):
        trunk = torchvision.models.resnet18().state_dict()
    checkpoint = {f"module.encoder_q.{key}": value for key, value in trunk.items()}
    checkpoint["module.encoder_k.conv1.weight"] = trunk["conv1.weight"]  # another encoder: ignored
    checkpoint["module.encoder_q.layer9.weight"] = trunk["conv1.weight"]  # under the prefix, unknown
    del checkpoint["module.encoder_q.layer4.1.bn2.running_var"]

    result = resnet_state_dict_from_torchvision(checkpoint, prefix="module.encoder_q.")
    assert result.config.depth == 18 and not result.config.cifar_stem
    assert result.missing_keys == ["layer4.1.bn2.running_var"]
    assert result.unexpected_keys == ["layer9.weight"]
    assert not any(key.startswith("fc.") for key in result.state_dict)
    assert len(result.state_dict) == len(trunk) - 2 - 1  # fc.weight, fc.bias, the deleted key

    with torch.device("meta"):
        wide = torchvision.models.wide_resnet101_2().state_dict()
    inferred = resnet_state_dict_from_torchvision(wide).config
    assert (inferred.depth, inferred.width_per_group) == (101, 128)
    with pytest.raises(ValueError, match="conv1.weight"):
        resnet_state_dict_from_torchvision(checkpoint)  # forgot the prefix


def test_state_dict_from_torchvision_loads_strictly():
    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    randomize_batch_norms_(reference)
    result = resnet_state_dict_from_torchvision(reference.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    model = SSLResNetModel(result.config).eval()
    model.load_state_dict(result.state_dict, strict=True)
    reference.fc = nn.Identity()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(pixels).pooler_output - reference(pixels)).abs().max() <= ATOL


TINY_TRANSFORMERS_CONFIGS = {
    "convnext": lambda: ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    "resnet": lambda: ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
    "ijepa": lambda: IJepaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                 image_size=32, patch_size=8),
}


@pytest.mark.parametrize("name", sorted(TINY_TRANSFORMERS_CONFIGS))
def test_transformers_backbone_in_a_method_model(tmp_path, name):
    backbone_config = TINY_TRANSFORMERS_CONFIGS[name]()
    model = DinoModel(DinoConfig(backbone_config=backbone_config)).eval()
    assert isinstance(model.backbone, TransformersBackbone)
    assert model.config.hidden_size == feature_dim(backbone_config) == 16

    reference = AutoModel.from_config(backbone_config).eval()
    reference.load_state_dict(model.backbone.model.state_dict(), strict=True)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixels)
        expected = reference(pixels)
    assert out.pooler_output.shape == (2, 16)
    if expected.get("pooler_output") is not None:  # its own pooler, flattened (ResNet's is (B, C, 1, 1))
        torch.testing.assert_close(out.pooler_output, expected.pooler_output.flatten(1), rtol=0, atol=0)
    else:  # no pooler (I-JEPA): the mean of the tokens
        torch.testing.assert_close(out.pooler_output, expected.last_hidden_state.mean(dim=1))
    torch.testing.assert_close(out.last_hidden_state, expected.last_hidden_state, rtol=0, atol=0)

    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, DinoModel) and type(loaded.config.backbone_config) is type(backbone_config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).pooler_output, out.pooler_output, rtol=0, atol=0)


def test_dino_with_resnet_pools_global_average(tmp_path):
    model = DinoModel(DinoConfig(backbone_config=SSLResNetConfig(depth=18, cifar_stem=True))).eval()
    randomize_batch_norms_(model)
    assert model.config.hidden_size == 512 and model.config.backbone_config.pooling == "avg"
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixels)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=(2, 3)))
    assert out.last_hidden_state.shape == (2, 512, 4, 4)

    model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded.backbone, SSLResNetModel) and loaded.config.backbone_config.cifar_stem
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).pooler_output, out.pooler_output, rtol=0, atol=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SSLResNetConfig(depth=20), r"\[18, 34, 50, 101, 152\]"),
        (lambda: SSLResNetConfig.from_name("resnet20"), "wide_resnet50_2"),
        (lambda: SSLResNetConfig(depth=18, width_per_group=128), "basic blocks"),
        (lambda: SSLResNetConfig(pooling="cls"), "pooling"),
        (lambda: SSLResNetConfig(num_channels=0), "num_channels"),
        (lambda: TransformersBackbone(BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32)), "not images"),
    ],
)
def test_bad_config(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "pixels, message",
    [(torch.randn(2, 1, 32, 32), "1 channels, the model expects 3"), (torch.randn(3, 32, 32), "batch, channels")],
)
def test_bad_pixel_values(pixels, message):
    model = SSLResNetModel(SSLResNetConfig(depth=18))
    with pytest.raises(ValueError, match=message):
        model(pixels)
