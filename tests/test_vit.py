"""SSLViTModel against timm's VisionTransformer, plus masking, interpolation, stochastic depth and bad input."""

import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, vit_small_patch16_224
from timm.layers import SwiGLUPacked
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hf_ssl.backbones.configuration_vit import SSLViTConfig
from hf_ssl.backbones.modeling_vit import SSLViTModel

DIM, DEPTH, IMG, PATCH = 64, 2, 32, 8
GRID = IMG // PATCH


def timm_to_ours(state_dict: dict, swiglu: bool = False, no_embed_class: bool = False) -> dict:
    """Rename a timm VisionTransformer state dict to SSLViTModel keys.

    timm's `no_embed_class` tables cover only the patches; ours has a CLS row first, which is zero there."""
    renames = [
        ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
        ("cls_token", "embeddings.cls_token"),
        ("reg_token", "embeddings.register_tokens"),
        ("blocks.", "layers."),
    ]
    if swiglu:
        renames += [(".mlp.fc1.", ".mlp.w12."), (".mlp.fc2.", ".mlp.w3.")]
    converted = {}
    for key, value in state_dict.items():
        if key == "pos_embed":
            if no_embed_class:
                value = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], dim=1)
            converted["embeddings.position_embeddings"] = value
            continue
        if key.startswith("norm."):
            converted["layernorm." + key[len("norm."):]] = value
            continue
        for old, new in renames:
            key = key.replace(old, new)
        converted[key] = value
    return converted


def randomize_(model: nn.Module, seed: int = 0) -> None:
    """Move every parameter away from its (often zero or constant) init so that a wrong mapping shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)


FLAVOURS = {
    "dino": (dict(num_heads=2), dict(num_attention_heads=2)),
    "dino_4heads": (dict(num_heads=4), dict(num_attention_heads=4)),
    "layerscale": (dict(num_heads=4, init_values=1e-1), dict(num_attention_heads=4, layerscale_value=1e-1)),
    "registers": (
        dict(num_heads=4, init_values=1e-1, reg_tokens=2, no_embed_class=True),
        dict(num_attention_heads=4, layerscale_value=1e-1, num_register_tokens=2),
    ),
    # timm packs SwiGLU as fc1 = [gate; up] (gate_last=False) of width 2 * hidden; our hidden for 64 is 176
    "swiglu": (
        dict(num_heads=4, init_values=1e-1, mlp_ratio=2 * 176 / DIM, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU),
        dict(num_attention_heads=4, layerscale_value=1e-1, use_swiglu_ffn=True),
    ),
}


def make_pair(flavour: str, dynamic_img_size: bool = False, **our_overrides):
    timm_kwargs, our_kwargs = FLAVOURS[flavour]
    torch.manual_seed(0)
    reference = VisionTransformer(
        img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, qkv_bias=True, num_classes=0,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), dynamic_img_size=dynamic_img_size, **timm_kwargs,
    ).eval()
    randomize_(reference)
    config = SSLViTConfig(
        image_size=IMG, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH, **our_kwargs, **our_overrides
    )
    ours = SSLViTModel(config).eval()
    state_dict = timm_to_ours(
        reference.state_dict(), swiglu=config.use_swiglu_ffn, no_embed_class=timm_kwargs.get("no_embed_class", False)
    )
    missing, unexpected = ours.load_state_dict(state_dict, strict=False)
    assert missing == ["embeddings.mask_token"] and unexpected == []
    return reference, ours


def tiny_model(**kwargs) -> SSLViTModel:
    config = dict(image_size=IMG, patch_size=PATCH, hidden_size=DIM, num_hidden_layers=DEPTH, num_attention_heads=4)
    torch.manual_seed(0)
    model = SSLViTModel(SSLViTConfig(**{**config, **kwargs})).eval()
    randomize_(model, seed=1)
    return model


def images(batch=2, height=IMG, width=IMG, seed=0):
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------- equality with timm


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_matches_timm(flavour):
    reference, ours = make_pair(flavour)
    pixels = images()
    with torch.no_grad():
        expected = reference.forward_features(pixels)
        out = ours(pixels)
    assert out.last_hidden_state.shape == expected.shape
    torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pooler_output, expected[:, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("flavour", ["dino", "registers"])
def test_mean_pooling_matches_timm_avg_pool(flavour):
    reference, ours = make_pair(flavour, pooling="mean")
    reference.global_pool = "avg"  # timm averages the tokens after its prefix (CLS and registers)
    pixels = images()
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(pixels), pre_logits=True)
        out = ours(pixels)
    torch.testing.assert_close(out.pooler_output, expected, atol=1e-5, rtol=0)
    prefix = 1 + ours.config.num_register_tokens
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, prefix:].mean(1), atol=1e-6, rtol=0)


def test_cls_plus_mean_pooling():
    model = tiny_model(num_register_tokens=3, pooling="cls+mean")
    with torch.no_grad():
        out = model(images())
    hidden = out.last_hidden_state
    torch.testing.assert_close(out.pooler_output, torch.cat([hidden[:, 0], hidden[:, 4:].mean(1)], -1))


# ------------------------------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize("flavour", ["dino", "registers"])
@pytest.mark.parametrize("size", [(48, 48), (32, 48), (24, 40)])
def test_interpolation_matches_timm_dynamic_img_size(flavour, size):
    # timm resamples to the exact grid with antialias=True; ours does that with offset 0 and antialias on
    reference, ours = make_pair(flavour, dynamic_img_size=True, interpolate_offset=0.0, interpolate_antialias=True)
    pixels = images(height=size[0], width=size[1])
    with torch.no_grad():
        expected = reference.forward_features(pixels)
        out = ours(pixels)
    assert out.last_hidden_state.shape[1] == 1 + ours.config.num_register_tokens + size[0] * size[1] // PATCH**2
    torch.testing.assert_close(out.last_hidden_state, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("grid", [(6, 6), (4, 6), (3, 5)])
def test_dino_offset_interpolation(grid):
    model = tiny_model(interpolate_offset=0.1)
    pos = model.embeddings.position_embeddings
    table = pos[:, 1:].reshape(1, GRID, GRID, DIM).permute(0, 3, 1, 2)
    scale = ((grid[0] + 0.1) / GRID, (grid[1] + 0.1) / GRID)
    expected = F.interpolate(table, scale_factor=scale, mode="bicubic", align_corners=False)
    expected = torch.cat([pos[:, :1], expected.permute(0, 2, 3, 1).reshape(1, -1, DIM)], dim=1)
    with torch.no_grad():
        got = model.embeddings.interpolate_pos_encoding(*grid)
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    # the offset really changes the table, so this test tells the two formulas apart
    exact = F.interpolate(table, size=grid, mode="bicubic", align_corners=False)
    assert not torch.allclose(expected[:, 1:], exact.permute(0, 2, 3, 1).reshape(1, -1, DIM), atol=1e-4)


def test_native_size_uses_table_unchanged():
    model = tiny_model()
    assert model.embeddings.interpolate_pos_encoding(GRID, GRID) is model.embeddings.position_embeddings


# --------------------------------------------------------------------------------------------------------- masking


def test_all_false_mask_equals_no_mask():
    model = tiny_model()
    pixels = images()
    mask = torch.zeros(2, GRID * GRID, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels, bool_masked_pos=mask).last_hidden_state,
                                   model(pixels).last_hidden_state, atol=0, rtol=0)


def test_masked_patches_are_replaced_by_mask_token():
    model = tiny_model(num_register_tokens=2)
    pixels = images()
    mask = torch.rand(2, GRID * GRID, generator=torch.Generator().manual_seed(3)) < 0.5

    def put_mask_token(module, args, output):
        return torch.where(mask.unsqueeze(-1), model.embeddings.mask_token, output)

    with torch.no_grad():
        masked = model(pixels, bool_masked_pos=mask).last_hidden_state
        handle = model.embeddings.patch_embeddings.register_forward_hook(put_mask_token)
        manual = model(pixels).last_hidden_state
        handle.remove()
        plain = model(pixels).last_hidden_state
    torch.testing.assert_close(masked, manual, atol=1e-6, rtol=0)
    assert not torch.allclose(masked, plain, atol=1e-3)


def test_keep_all_indices_equals_full_forward():
    model = tiny_model(num_register_tokens=2)
    pixels = images()
    keep = torch.arange(GRID * GRID).expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels, keep_indices=keep).last_hidden_state,
                                   model(pixels).last_hidden_state, atol=1e-6, rtol=0)


def test_keep_indices_selects_patches():
    model = tiny_model(num_register_tokens=2, num_hidden_layers=0)  # no blocks: tokens are the embeddings (+ norm)
    pixels = images()
    keep = torch.stack([torch.randperm(GRID * GRID, generator=torch.Generator().manual_seed(i))[:5] for i in range(2)])
    with torch.no_grad():
        kept = model(pixels, keep_indices=keep).last_hidden_state
        full = model(pixels).last_hidden_state
    assert kept.shape == (2, 1 + 2 + 5, DIM)
    torch.testing.assert_close(kept[:, :3], full[:, :3])
    torch.testing.assert_close(kept[:, 3:], full[:, 3:].gather(1, keep.unsqueeze(-1).expand(-1, -1, DIM)))


def test_compute_grows_with_visible_tokens():
    model = tiny_model()
    pixels = images()

    def flops(**kwargs):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(pixels, **kwargs)
        return counter.get_total_flops()

    num_patches = GRID * GRID
    quarter = torch.arange(num_patches // 4).expand(2, -1)
    ratio = flops(keep_indices=quarter) / flops()
    assert 0.0 < ratio < 0.4


# ------------------------------------------------------------------------------------ attentions, hidden states


def test_output_attentions_and_hidden_states():
    model = tiny_model(num_register_tokens=2)
    pixels = images()
    with torch.no_grad():
        eager = model(pixels, output_attentions=True, output_hidden_states=True)
        fused = model(pixels)
    tokens = 1 + 2 + GRID * GRID
    assert len(eager.attentions) == DEPTH
    for attn in eager.attentions:
        assert attn.shape == (2, 4, tokens, tokens)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, tokens))
        assert (attn >= 0).all()
    torch.testing.assert_close(eager.last_hidden_state, fused.last_hidden_state, atol=1e-5, rtol=0)
    assert len(eager.hidden_states) == DEPTH + 1
    assert fused.attentions is None and fused.hidden_states is None
    # the last hidden state before the final norm, normed, is last_hidden_state
    torch.testing.assert_close(model.layernorm(eager.hidden_states[-1]), eager.last_hidden_state)


# ------------------------------------------------------------------------------------------------ stochastic depth


def test_drop_path_only_in_training():
    model = tiny_model(drop_path_rate=0.5, num_hidden_layers=4)
    reference = tiny_model(num_hidden_layers=4)  # same weights, no stochastic depth
    pixels = images(batch=8)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).last_hidden_state, reference(pixels).last_hidden_state,
                                   atol=0, rtol=0)
        model.train()
        torch.manual_seed(1)
        first = model(pixels).last_hidden_state
        torch.manual_seed(2)
        second = model(pixels).last_hidden_state
    assert not torch.allclose(first, second)


def drop_rates(model):
    return [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.layers]


def test_drop_path_rates_ramp_linearly():
    model = tiny_model(drop_path_rate=0.3, num_hidden_layers=4)
    assert drop_rates(model) == pytest.approx(torch.linspace(0, 0.3, 4).tolist())
    uniform = tiny_model(drop_path_rate=0.3, num_hidden_layers=4, drop_path_uniform=True)
    assert drop_rates(uniform) == pytest.approx([0.3] * 4)


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "pixels, message",
    [
        (torch.randn(1, 1, IMG, IMG), "channels"),
        (torch.randn(3, IMG, IMG), "(batch, channels, height, width)"),
        (torch.randn(1, 3, IMG, IMG + 4), "not divisible by the patch size"),
    ],
)
def test_bad_pixel_values(pixels, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_model()(pixels)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: SSLViTConfig.from_size("huge"), "Unknown ViT size 'huge'"),
        (lambda: SSLViTConfig(hidden_size=64, num_attention_heads=5), "divisible by num_attention_heads"),
        (lambda: SSLViTConfig(pooling="cls", use_cls_token=False), "needs use_cls_token=True"),
        (lambda: SSLViTConfig(pooling="max"), "pooling must be one of"),
        (lambda: SSLViTConfig(patch_embed_init="kaiming"), "patch_embed_init must be one of"),
    ],
)
def test_bad_config(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


@pytest.mark.parametrize("patch_embed_init", ["trunc_normal", "xavier_uniform"])
def test_patch_embed_init(patch_embed_init):
    """trunc_normal: std `initializer_range` (transformers' ViT); xavier_uniform: U(-a, a) with
    a = sqrt(6 / (C * p * p + D)) on the flattened projection, as torch's xavier_uniform_ on a (D, C*p*p) matrix."""
    torch.manual_seed(0)
    config = SSLViTConfig(image_size=32, patch_size=8, hidden_size=256, num_hidden_layers=1, num_attention_heads=4,
                          patch_embed_init=patch_embed_init)  # fmt: skip
    weight = SSLViTModel(config).embeddings.patch_embeddings.projection.weight.detach()
    if patch_embed_init == "trunc_normal":
        expected_std, bound = 0.02, 2.0
    else:
        reference = torch.empty(256, 3 * 8 * 8)
        nn.init.xavier_uniform_(reference)
        expected_std, bound = reference.std().item(), reference.abs().max().item() * 1.001
    assert weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert weight.abs().max().item() <= bound


def test_bad_mask_shapes():
    model = tiny_model()
    with pytest.raises(ValueError, match="bool_masked_pos must have shape"):
        model(images(), bool_masked_pos=torch.zeros(2, GRID * GRID + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="keep_indices must be"):
        model(images(), keep_indices=torch.arange(4))


# ---------------------------------------------------------------------------------------------------- named sizes


def test_named_sizes():
    small = SSLViTConfig.from_size("small")
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads) == (384, 12, 6)
    assert (SSLViTConfig.from_size("base").hidden_size, SSLViTConfig.from_size("large").num_hidden_layers) == (768, 24)
    giant = SSLViTConfig.from_size("giant", patch_size=14, image_size=518)
    assert giant.use_swiglu_ffn and giant.hidden_size == 1536 and giant.patch_size == 14


def test_small_parameter_count_matches_timm():
    ours = SSLViTModel(SSLViTConfig.from_size("small", patch_size=16, image_size=224))
    reference = vit_small_patch16_224(pretrained=False, num_classes=0)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert count(ours) == count(reference) + 384  # + our mask token


# ------------------------------------------------------------------------------------------ gradient checkpointing


@pytest.mark.parametrize("enable", ["activation_checkpointing_enable", "gradient_checkpointing_enable"])
def test_gradient_checkpointing_gives_same_gradients(enable):
    pixels = images()

    def grads(checkpointing):
        model = tiny_model(num_register_tokens=1, layerscale_value=0.5).train()
        if checkpointing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # gradient_checkpointing_enable is the v5 alias
                getattr(model, enable)()
            assert all(layer.gradient_checkpointing for layer in model.layers)
        attn_calls = []
        model.layers[0].attn.register_forward_hook(lambda *_: attn_calls.append(1))
        model(pixels).last_hidden_state.square().mean().backward()
        assert len(attn_calls) == (2 if checkpointing else 1)  # checkpointing recomputes the block in backward
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=0, msg=name)
