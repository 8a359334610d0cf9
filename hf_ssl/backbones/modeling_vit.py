"""The masking-aware Vision Transformer behind every ViT-based method.

Two ways to hide patches, as the methods need them:
- `bool_masked_pos` (batch, num_patches): masked patches are replaced by a learned mask token and still computed
  (iBOT, SimMIM, DINOv2, data2vec, BEiT).
- `keep_indices` (batch, num_kept): only the listed patches enter the encoder, so compute grows with the visible
  tokens (MAE, I-JEPA, MSN).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_vit import SSLViTConfig


def sincos_position_table(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table of shape (grid_size**2, dim): first half encodes the column, second the row (MAE)."""
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embeddings need hidden_size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


class PatchEmbeddings(nn.Module):
    """Non-overlapping patches, linearly projected: (B, C, H, W) -> (B, H/p * W/p, D)."""

    def __init__(self, config: SSLViTConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}")
        _, channels, height, width = pixel_values.shape
        if channels != self.num_channels:
            raise ValueError(f"pixel_values has {channels} channels, the model expects {self.num_channels}")
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not divisible by the patch size {self.patch_size}")
        pixel_values = pixel_values.to(self.projection.weight.dtype)
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    """Patch embeddings, mask token, CLS token, register tokens and (interpolated) position embeddings."""

    def __init__(self, config: SSLViTConfig):
        super().__init__()
        self.config = config
        dim = config.hidden_size
        self.patch_embeddings = PatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.use_cls_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, dim)) if config.num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        num_positions = config.num_patches + int(config.use_cls_token)
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, num_positions, dim), requires_grad=config.position_embedding_type == "learned"
        )

    def interpolate_pos_encoding(self, grid_height: int, grid_width: int) -> torch.Tensor:
        """Position embeddings for a grid_height x grid_width patch grid (bicubic, in float32)."""
        pos = self.position_embeddings
        num_cls = int(self.config.use_cls_token)
        patch_pos = pos[:, num_cls:]
        side = math.isqrt(patch_pos.shape[1])
        if grid_height == grid_width == side:
            return pos
        patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2).float()
        offset = self.config.interpolate_offset
        if offset:
            # the originals' scale factor (g + offset) / M; the offset guards against rounding down the output size
            resize = dict(scale_factor=((grid_height + offset) / side, (grid_width + offset) / side))
        else:
            resize = dict(size=(grid_height, grid_width))
        patch_pos = F.interpolate(
            patch_pos, mode="bicubic", align_corners=False, antialias=self.config.interpolate_antialias, **resize
        )
        patch_pos = patch_pos.to(pos.dtype).permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, -1)
        return torch.cat([pos[:, :num_cls], patch_pos], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        keep_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        height, width = pixel_values.shape[-2:]
        patch_size = self.config.patch_size
        embeddings = self.patch_embeddings(pixel_values)
        batch_size, num_patches, dim = embeddings.shape

        if bool_masked_pos is not None:
            if bool_masked_pos.shape != (batch_size, num_patches):
                raise ValueError(
                    f"bool_masked_pos must have shape {(batch_size, num_patches)}, got {tuple(bool_masked_pos.shape)}"
                )
            embeddings = torch.where(bool_masked_pos.unsqueeze(-1), self.mask_token.to(embeddings.dtype), embeddings)

        pos = self.interpolate_pos_encoding(height // patch_size, width // patch_size)
        num_cls = int(self.config.use_cls_token)
        embeddings = embeddings + pos[:, num_cls:]

        if keep_indices is not None:
            if keep_indices.ndim != 2 or keep_indices.shape[0] != batch_size:
                raise ValueError(f"keep_indices must be (batch, num_kept), got shape {tuple(keep_indices.shape)}")
            embeddings = embeddings.gather(1, keep_indices.unsqueeze(-1).expand(-1, -1, dim))

        prefix = []
        if self.cls_token is not None:
            prefix.append((self.cls_token + pos[:, :1]).expand(batch_size, -1, -1))
        if self.register_tokens is not None:
            prefix.append(self.register_tokens.expand(batch_size, -1, -1))
        return torch.cat([*prefix, embeddings], dim=1) if prefix else embeddings


class ViTAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection and `scaled_dot_product_attention`."""

    def __init__(self, config: SSLViTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        batch_size, seq_len, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch_size, seq_len, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if output_attentions:
            attn_weights = (query @ key.transpose(-2, -1) * self.head_dim**-0.5).softmax(dim=-1)
            context = attn_weights @ value
        else:
            attn_weights = None
            context = F.scaled_dot_product_attention(query, key, value)
        context = context.transpose(1, 2).reshape(batch_size, seq_len, dim)
        return self.proj(context), attn_weights


class ViTMLP(nn.Module):
    def __init__(self, config: SSLViTConfig):
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = nn.Linear(config.hidden_size, hidden)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTSwiGLU(nn.Module):
    """SwiGLU feed-forward (DINOv2 giant): fused gate/up projection, two thirds of the MLP width rounded up to 8."""

    def __init__(self, config: SSLViTConfig):
        super().__init__()
        hidden = int(config.hidden_size * config.mlp_ratio)
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(config.hidden_size, 2 * hidden)
        self.w3 = nn.Linear(hidden, config.hidden_size)

    def forward(self, x):
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


class LayerScale(nn.Module):
    def __init__(self, config: SSLViTConfig):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, x):
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.drop_prob)
        return x * keep / (1 - self.drop_prob)


class ViTBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then x + ls2(mlp(norm2(x)))."""

    def __init__(self, config: SSLViTConfig, drop_path: float):
        super().__init__()
        layer_scale = LayerScale if config.layerscale_value is not None else lambda _: nn.Identity()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = ViTAttention(config)
        self.ls1 = layer_scale(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTSwiGLU(config) if config.use_swiglu_ffn else ViTMLP(config)
        self.ls2 = layer_scale(config)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False):
        attn_output, attn_weights = self.attn(self.norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path(self.ls1(attn_output))
        hidden_states = hidden_states + self.drop_path(self.ls2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, attn_weights


class SSLViTPreTrainedModel(PreTrainedModel):
    config_class = SSLViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "ViTBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):  # the patch projection
            if self.config.patch_embed_init == "xavier_uniform":
                bound = math.sqrt(6.0 / (module.weight[0].numel() + module.weight.shape[0]))
                init.uniform_(module.weight, -bound, bound)
            else:
                init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, ViTEmbeddings):
            if self.config.position_embedding_type == "sincos":
                table = sincos_position_table(math.isqrt(self.config.num_patches), self.config.hidden_size)
                if self.config.use_cls_token:
                    table = torch.cat([table.new_zeros(1, table.shape[1]), table])
                init.copy_(module.position_embeddings, table.unsqueeze(0))
            else:
                init.trunc_normal_(module.position_embeddings, std=std)
            if module.cls_token is not None:
                init.trunc_normal_(module.cls_token, std=std)
            if module.register_tokens is not None:
                init.trunc_normal_(module.register_tokens, std=std)
            init.zeros_(module.mask_token)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, self.config.layerscale_value)


class SSLViTModel(SSLViTPreTrainedModel):
    """The ViT encoder. `last_hidden_state` holds [CLS, registers..., patches...] after the final LayerNorm;
    `pooler_output` is what `config.pooling` names, computed without parameters and never from registers."""

    def __init__(self, config: SSLViTConfig):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config)
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate if config.drop_path_uniform else config.drop_path_rate * i / max(depth - 1, 1)
                 for i in range(depth)]
        self.layers = nn.ModuleList([ViTBlock(config, rate) for rate in rates])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The representation the method evaluates: CLS, mean of patch tokens, or both concatenated."""
        pooling = self.config.pooling
        if pooling == "cls":
            return last_hidden_state[:, 0]
        patch_mean = self.patch_tokens(last_hidden_state).mean(dim=1)
        if pooling == "mean":
            return patch_mean
        return torch.cat([last_hidden_state[:, 0], patch_mean], dim=-1)

    def patch_tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The patch tokens of a sequence this model returned (CLS and registers removed)."""
        return last_hidden_state[:, self.config.num_prefix_tokens :]

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        keep_indices: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        hidden_states = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos, keep_indices=keep_indices)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, attn_weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)

        last_hidden_state = self.layernorm(hidden_states)
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pool(last_hidden_state),
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return output if return_dict else output.to_tuple()
