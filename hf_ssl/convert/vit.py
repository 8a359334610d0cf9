"""The research codes' ViT state dicts (DINO, iBOT, DINOv2, MAE, MoCo v3, MSN, I-JEPA: all timm-style) -> `SSLViTModel`.

Their keys differ only in details that one table covers: DINOv2 names LayerScale `ls1.gamma` and iBOT `gamma_1`,
DINOv2's SwiGLU is `mlp.w12`/`mlp.w3`, registers are `register_tokens`, the mask token is `mask_token` (DINOv2) or
`masked_embed` (iBOT), and FSDP training dumps of DINOv2 nest the blocks in chunks (`blocks.<chunk>.<i>.`).
BEiT (and data2vec-vision, written on BEiT's code) keep the query and value biases apart (`attn.q_bias`,
`attn.v_bias`; the key has none) and a (1, 1, D) mask token; `merge_beit_attention_bias` folds them into ours.
What the keys do not hold (the number of heads) comes from a table of the papers' architectures.
"""

import math
import re

import torch

from ..backbones import SSLViTConfig

# Top-level tensors: original name -> ours.
VIT_KEYS = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "cls_token": "embeddings.cls_token",
    "register_tokens": "embeddings.register_tokens",
    "mask_token": "embeddings.mask_token",
    "masked_embed": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
# Tensors of block i: original name -> ours (under `layers.{i}.`).
BLOCK_KEYS = {
    **{f"{module}.{param}": f"{module}.{param}"
       for module in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2", "mlp.w12", "mlp.w3")
       for param in ("weight", "bias")},
    "ls1.gamma": "ls1.gamma",
    "ls2.gamma": "ls2.gamma",
    "gamma_1": "ls1.gamma",
    "gamma_2": "ls2.gamma",
    "attn.q_bias": "attn.q_bias",  # BEiT: merged into attn.qkv.bias by merge_beit_attention_bias
    "attn.v_bias": "attn.v_bias",
}
# `blocks.<i>.<rest>`, or `blocks.<chunk>.<i>.<rest>` in DINOv2's chunked (FSDP) training dumps.
BLOCK_PATTERN = re.compile(r"blocks\.(?:\d+\.)?(\d+)\.(.+)")

# The papers' ViTs: width, depth, heads (and MLP) that a file does not fully record.
VIT_ARCHS = {
    "vit_tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3),
    "vit_small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "vit_base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "vit_large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "vit_huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16),
    # I-JEPA's ViT-g: width 1408, MLP ratio 48/11
    "vit_giant": dict(hidden_size=1408, num_hidden_layers=40, num_attention_heads=16),
    # DINOv2's ViT-g: width 1536, SwiGLU
    "vit_giant2": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24),
}


def rename_vit_key(key: str) -> str | None:
    """Our name for an original ViT key, or None if the key is not part of the encoder."""
    if key in VIT_KEYS:
        return VIT_KEYS[key]
    match = BLOCK_PATTERN.fullmatch(key)
    if match and match[2] in BLOCK_KEYS:
        return f"layers.{match[1]}.{BLOCK_KEYS[match[2]]}"
    return None


def merge_beit_attention_bias(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our-named state dict with BEiT's separate query/value biases fused into `attn.qkv.bias` (the key's part zero,
    as BEiT computes it) and its (1, 1, D) mask token as our (1, D)."""
    state = dict(state_dict)
    for key in [key for key in state if key.endswith(".attn.q_bias")]:
        block = key[: -len("q_bias")]
        if block + "v_bias" not in state:
            raise ValueError(f"BEiT attention {block!r} has a query bias but no value bias")
        query, value = state.pop(block + "q_bias"), state.pop(block + "v_bias")
        state[block + "qkv.bias"] = torch.cat([query, torch.zeros_like(query), value])
    if any(key.endswith(".attn.v_bias") for key in state):
        raise ValueError("a BEiT attention has a value bias but no query bias")
    if "embeddings.mask_token" in state:
        state["embeddings.mask_token"] = state["embeddings.mask_token"].reshape(1, -1)
    return state


def _mlp_ratio(state_dict: dict[str, torch.Tensor], dim: int) -> tuple[float, bool]:
    """(mlp_ratio, use_swiglu_ffn) that rebuild the first block's MLP widths exactly."""
    if "layers.0.mlp.w12.weight" in state_dict:
        hidden = state_dict["layers.0.mlp.w3.weight"].shape[1]
        # ours: int(dim * ratio) -> two thirds, rounded up to a multiple of 8 (DINOv2's SwiGLUFFNFused)
        for ratio in (4.0, hidden * 1.5 / dim):
            if (int(int(dim * ratio) * 2 / 3) + 7) // 8 * 8 == hidden:
                return ratio, True
        raise ValueError(f"SwiGLU hidden width {hidden} is not DINOv2's rounding of any MLP ratio for width {dim}")
    hidden = state_dict["layers.0.mlp.fc1.weight"].shape[0]
    ratio = hidden / dim
    while int(dim * ratio) < hidden:  # 1408 * (6144 / 1408) may fall just below 6144
        ratio = math.nextafter(ratio, math.inf)
    return ratio, False


def vit_config_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    archs: dict[str, dict] = VIT_ARCHS,
    arch: str | None = None,
    num_heads: int | None = None,
    patch_size: int | None = None,
    **settings,
) -> SSLViTConfig:
    """The `SSLViTConfig` of a state dict in our key names: width, channels and patch size from the patch
    embedding, depth from the blocks, CLS/registers/LayerScale/SwiGLU/qkv bias from the tensors present, the image
    size from the position table. Heads: `num_heads`, else `arch`'s, else the arch of that width in `archs`.
    `settings` set the remaining fields (pooling, interpolation)."""
    projection = state_dict["embeddings.patch_embeddings.projection.weight"]
    dim, channels, patch_height, patch_width = projection.shape
    if patch_height != patch_width:
        raise ValueError(f"non-square patches {patch_height}x{patch_width} are not supported")
    if patch_size is not None and patch_size != patch_width:
        raise ValueError(f"--patch-size {patch_size} does not match the checkpoint's patch embedding ({patch_width})")
    layer_ids = sorted({int(key.split(".")[1]) for key in state_dict if key.startswith("layers.")})
    if layer_ids != list(range(len(layer_ids))) or not layer_ids:
        raise ValueError(f"the checkpoint's blocks are not numbered 0..n-1 (found {layer_ids[:5]}...)")
    depth = len(layer_ids)
    use_cls_token = "embeddings.cls_token" in state_dict
    num_positions = state_dict["embeddings.position_embeddings"].shape[1] - int(use_cls_token)
    grid = math.isqrt(num_positions)
    if grid * grid != num_positions:
        raise ValueError(f"the position table has {num_positions} patch positions, not a square grid")

    if arch is not None:
        if arch not in archs:
            raise ValueError(f"unknown --arch {arch!r}; choose one of {sorted(archs)}")
        expected = archs[arch]
        if (expected["hidden_size"], expected["num_hidden_layers"]) != (dim, depth):
            raise ValueError(
                f"--arch {arch} has width {expected['hidden_size']} and depth {expected['num_hidden_layers']}, "
                f"the checkpoint width {dim} and depth {depth}"
            )
    if num_heads is None:
        if arch is None:
            arch = next((name for name, spec in archs.items() if spec["hidden_size"] == dim), None)
        if arch is None:
            known = ", ".join(f"{name} ({spec['hidden_size']})" for name, spec in archs.items())
            raise ValueError(
                f"the number of attention heads is not stored in the checkpoint and width {dim} is none of the known "
                f"architectures' ({known}); pass --num-heads (num_heads=) or --arch"
            )
        num_heads = archs[arch]["num_attention_heads"]

    mlp_ratio, use_swiglu_ffn = _mlp_ratio(state_dict, dim)
    has_layerscale = "layers.0.ls1.gamma" in state_dict
    return SSLViTConfig(
        image_size=grid * patch_width,
        patch_size=patch_width,
        num_channels=channels,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        mlp_ratio=mlp_ratio,
        use_swiglu_ffn=use_swiglu_ffn,
        qkv_bias="layers.0.attn.qkv.bias" in state_dict,
        layer_norm_eps=1e-6,
        layerscale_value=settings.pop("layerscale_value", 1e-5) if has_layerscale else None,
        use_cls_token=use_cls_token,
        num_register_tokens=state_dict["embeddings.register_tokens"].shape[1]
        if "embeddings.register_tokens" in state_dict else 0,
        **{key: value for key, value in settings.items() if key != "layerscale_value"},
    )
