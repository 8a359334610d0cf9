"""Heads put on top of an encoder during pretraining and thrown away afterwards: projectors (SimCLR, BYOL,
SimSiam, VICReg, Barlow Twins, MoCo) and DINO's prototype head.

Every head is an `SSLHead`: it initialises itself like its original (`reset_parameters`), both when built and
when `transformers` initialises a model's weights (`SSLPreTrainedModel.initialize_weights`), through the
`transformers.initialization` functions, which leave weights loaded from a checkpoint untouched.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from transformers import initialization as init

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class SSLHead(nn.Module):
    """Base of the pretraining heads: a module that knows its original initialisation."""

    def reset_parameters(self) -> None:
        raise NotImplementedError


def _reset_linear_like_torch(linear: nn.Linear) -> None:
    """PyTorch's default `nn.Linear` initialisation (kaiming-uniform weight, uniform bias)."""
    init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
    if linear.bias is not None:
        bound = 1 / math.sqrt(linear.in_features)
        init.uniform_(linear.bias, -bound, bound)


def _reset_batch_norm(norm: nn.BatchNorm1d) -> None:
    if norm.affine:
        init.ones_(norm.weight)
        init.zeros_(norm.bias)
    init.zeros_(norm.running_mean)
    init.ones_(norm.running_var)
    init.zeros_(norm.num_batches_tracked)


class ProjectionMLP(SSLHead):
    """An MLP projector: `num_layers` linear layers, each but the last followed by [BatchNorm] and the activation,
    the last optionally by a BatchNorm (`last_bn`).

    SimCLR v1: 2 layers, BN; SimCLR v2: 3 layers; BYOL: 2 layers, hidden 4096, out 256; SimSiam: 3 layers with
    `last_bn`; VICReg / Barlow Twins: 3 layers of 8192. PyTorch's default initialisation.

    Args:
        in_dim: input width (the encoder's feature width).
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of linear layers (1: a single linear map).
        use_bn: BatchNorm after each hidden linear layer.
        last_bn: BatchNorm after the last linear layer.
        last_bn_affine: learnable scale and shift in that last BatchNorm (SimSiam has none).
        activation: `"relu"` or `"gelu"`.
        bias: biases in the linear layers.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        use_bn: bool = True,
        last_bn: bool = False,
        last_bn_affine: bool = True,
        activation: str = "relu",
        bias: bool = True,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(width_in, width_out, bias=bias))
            if index < num_layers - 1:
                if use_bn:
                    layers.append(nn.BatchNorm1d(width_out))
                layers.append(ACTIVATIONS[activation]())
            elif last_bn:
                layers.append(nn.BatchNorm1d(width_out, affine=last_bn_affine))
        self.layers = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.layers:
            if isinstance(module, nn.Linear):
                _reset_linear_like_torch(module)
            elif isinstance(module, nn.BatchNorm1d):
                _reset_batch_norm(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DinoHead(SSLHead):
    """DINO's head: an MLP (GELU) to a bottleneck, L2 normalisation, and a weight-normalised linear layer to the
    K prototypes (Caron et al., 2021; `DINOHead` of the original code).

    The last layer's weight is `g * v / ||v||` per output row (`torch.nn.utils.parametrizations.weight_norm`;
    state-dict keys `last_layer.parametrizations.weight.original0` (g) and `...original1` (v), the names
    `transformers` maps an original checkpoint's `weight_g`/`weight_v` to). With `norm_last_layer`, g stays 1
    and is not trained, which stabilises ViT training.

    Args:
        in_dim: the encoder's feature width.
        out_dim: K, the number of prototypes.
        hidden_dim: width of the MLP.
        bottleneck_dim: width of the normalised embedding.
        num_layers: linear layers of the MLP (1: a single linear map to the bottleneck).
        use_bn: BatchNorm in the MLP (the paper's ResNet setting).
        norm_last_layer: fix g to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        self.mlp = ProjectionMLP(
            in_dim, hidden_dim, bottleneck_dim, num_layers=num_layers, use_bn=use_bn, activation="gelu"
        )
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.reset_parameters()
        self.weight_g.requires_grad_(not norm_last_layer)

    @property
    def weight_g(self) -> nn.Parameter:
        """g, the (K, 1) norms of the last layer's rows."""
        return self.last_layer.parametrizations.weight.original0

    @property
    def weight_v(self) -> nn.Parameter:
        """v, the (K, bottleneck) directions of the last layer's rows."""
        return self.last_layer.parametrizations.weight.original1

    def reset_parameters(self) -> None:
        """As the original: trunc_normal(0.02) MLP weights, zero biases, PyTorch's default init for v, g = 1."""
        for module in self.mlp.layers:
            if isinstance(module, nn.Linear):
                init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                _reset_batch_norm(module)
        init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        init.ones_(self.weight_g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


class ClusterPrototypes(SSLHead):
    """The clustering methods' K prototype vectors c_k, kept at unit norm: scores = z C^T, the cosine similarities of
    unit-norm embeddings z (SwAV's `prototypes`, DeepCluster v2's `prototypes{i}`: a linear layer without bias).
    Unlike MSN's `Prototypes`, the weights themselves are normalised, so the gradient is the plain linear one.

    The rows are renormalised after every update (`normalize_`, SwAV normalises them before every step) and at
    initialisation (PyTorch's default `nn.Linear` init, then unit rows).

    Args:
        dim: width of the embeddings.
        num_prototypes: K.
    """

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(f"dim and num_prototypes must be >= 1, got {dim} and {num_prototypes}")
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        init.copy_(self.weight, F.normalize(self.weight, dim=1))  # left alone when loaded from a checkpoint

    @torch.no_grad()
    def normalize_(self) -> None:
        """Give every prototype unit L2 norm, in place (during training: always applies)."""
        self.weight.copy_(F.normalize(self.weight, dim=1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T


class Prototypes(SSLHead):
    """K learnable prototype vectors compared by cosine similarity (MSN): `forward(z)` is the (..., K) matrix of
    cos(z, prototype_k). Initialised uniform in +-1/sqrt(dim), as the original.

    Args:
        dim: width of the embeddings.
        num_prototypes: K.
    """

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(f"dim and num_prototypes must be >= 1, got {dim} and {num_prototypes}")
        self.weight = nn.Parameter(torch.empty(num_prototypes, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.weight.shape[1] ** -0.5
        init.uniform_(self.weight, -bound, bound)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=-1) @ F.normalize(self.weight, dim=-1).T


class MaskTokenTransformer(SSLHead):
    """The trunk MAE's decoder and I-JEPA's predictor share: a linear map from the encoder's width, one learned mask
    token, the fixed 2-D sin-cos positions of the native patch grid, pre-norm blocks of our ViT and a final LayerNorm.
    Subclasses add their output layer, their initialisation and how they lay out the sequence."""

    def __init__(
        self,
        encoder_dim: int,
        grid_size: int,
        hidden_size: int,
        num_hidden_layers: int,
        num_attention_heads: int,
        mlp_ratio: float,
        layer_norm_eps: float,
        persistent_positions: bool,
    ):
        super().__init__()
        from ..backbones.configuration_vit import SSLViTConfig
        from ..backbones.modeling_vit import ViTBlock

        block_config = SSLViTConfig(
            image_size=grid_size, patch_size=1, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads, mlp_ratio=mlp_ratio, layer_norm_eps=layer_norm_eps,
        )  # fmt: skip
        self.grid_size = grid_size
        self.embed = nn.Linear(encoder_dim, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        positions = torch.zeros(1, grid_size * grid_size, hidden_size)
        self.register_buffer("position_embeddings", positions, persistent=persistent_positions)
        self.layers = nn.ModuleList([ViTBlock(block_config, 0.0) for _ in range(num_hidden_layers)])
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def reset_trunk(self, init_linear_weight) -> None:
        """Sin-cos positions; `init_linear_weight` on every linear weight (zero biases); unit LayerNorms."""
        from ..backbones.modeling_vit import sincos_position_table

        init.copy_(self.position_embeddings, sincos_position_table(self.grid_size, self.mask_token.shape[-1])[None])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init_linear_weight(module.weight)
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                init.ones_(module.weight)
                init.zeros_(module.bias)

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        """The blocks and the final norm over a prepared sequence (B, L, hidden)."""
        for layer in self.layers:
            hidden, _ = layer(hidden)
        return self.norm(hidden)


class JEPAPredictor(MaskTokenTransformer):
    """I-JEPA's predictor: a narrow ViT that reads the context encoder's tokens and one learned mask token per
    target patch (plus the fixed 2-D sin-cos position of that patch), and predicts the target encoder's
    representation of each target patch (Assran et al., 2023, Sec. 3; `VisionTransformerPredictor` of the original).

    Each of the M target blocks is predicted in its own sequence [context; mask tokens of block m], so blocks do
    not see each other. Pre-norm blocks of our ViT; trunc_normal(0.02) init with the residual projections of block
    l divided by sqrt(2 l), as the original.

    Args:
        encoder_dim: width of the encoder (input and output of the predictor).
        grid_size: side of the native patch grid (position table size).
        hidden_size: the predictor's width (384 in the paper).
        num_hidden_layers: its depth (12 for ViT-H/14; 6 in the original's defaults).
        num_attention_heads: its heads (the encoder's, as the original).
        mlp_ratio: MLP width / hidden_size.
        layer_norm_eps: LayerNorm epsilon (1e-6).
    """

    def __init__(
        self,
        encoder_dim: int,
        grid_size: int,
        hidden_size: int = 384,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        mlp_ratio: float = 4.0,
        layer_norm_eps: float = 1e-6,
    ):
        super().__init__(
            encoder_dim, grid_size, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, layer_norm_eps,
            persistent_positions=False,
        )  # fmt: skip
        self.proj = nn.Linear(hidden_size, encoder_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_trunk(partial(init.trunc_normal_, std=0.02))
        init.trunc_normal_(self.mask_token, std=0.02)
        for depth, layer in enumerate(self.layers, start=1):
            for residual in (layer.attn.proj.weight, layer.mlp.fc2.weight):
                init.copy_(residual, residual / math.sqrt(2.0 * depth))

    def positions(self, grid_size: int) -> torch.Tensor:
        """(1, grid_size**2, hidden) sin-cos positions of the patch grid (the native table, or a new one)."""
        if grid_size == self.grid_size:
            return self.position_embeddings
        from ..backbones.modeling_vit import sincos_position_table

        table = sincos_position_table(grid_size, self.mask_token.shape[-1])
        return table.to(self.position_embeddings)[None]

    def forward(
        self, context: torch.Tensor, context_indices: torch.Tensor, target_indices: torch.Tensor, grid_size: int
    ) -> torch.Tensor:
        """Predictions (M, B, N_t, encoder_dim) of the target patches.

        Args:
            context: (B, N_c, encoder_dim) context encoder outputs of the patches `context_indices` (B, N_c).
            target_indices: (M, B, N_t) patch indices of the M target blocks.
            grid_size: side of the (square) patch grid of the images.
        """
        num_targets, batch_size, num_target_patches = target_indices.shape
        if context.shape[:2] != context_indices.shape or target_indices.shape[1] != batch_size:
            raise ValueError(
                f"context {tuple(context.shape)}, context_indices {tuple(context_indices.shape)} and target_indices "
                f"{tuple(target_indices.shape)} disagree on (batch, tokens)"
            )
        positions = self.positions(grid_size)
        dim = positions.shape[-1]

        def positions_at(indices):
            return positions.expand(indices.shape[0], -1, -1).gather(1, indices.unsqueeze(-1).expand(-1, -1, dim))

        hidden = self.embed(context) + positions_at(context_indices)
        num_context = hidden.shape[1]
        queries = self.mask_token + positions_at(target_indices.flatten(0, 1))  # (M * B, N_t, hidden)
        hidden = torch.cat([hidden.repeat(num_targets, 1, 1), queries], dim=1)
        predictions = self.proj(self.transform(hidden)[:, num_context:])
        return predictions.unflatten(0, (num_targets, batch_size))


class LinearPredictionHead(SSLHead):
    """One linear layer from each token to its masked-modeling target: the pixels of its patch (SimMIM's 1x1
    convolution before the pixel shuffle), its HOG histogram (MaskFeat) or its visual-token logits (BEiT's `lm_head`).
    trunc_normal(0.02) weight and zero bias, as BEiT.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.trunc_normal_(self.linear.weight, std=0.02)
        init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MAEDecoder(MaskTokenTransformer):
    """MAE's lightweight decoder (He et al., 2022, Sec. 3): embeds the encoded visible tokens to its own width, puts a
    shared learned mask token at every masked position (unshuffling with `ids_restore`), adds fixed 2-D sin-cos
    positions, runs pre-norm ViT blocks and predicts the p * p * C pixels of every patch.

    Prefix tokens (CLS, registers) pass through without a position (MAE's CLS position is zero). Xavier-uniform
    linear layers, normal(0.02) mask token, as the original.

    Args:
        encoder_dim: width of the encoder.
        grid_size: side of the (square) patch grid.
        patch_dim: p * p * C, the pixels predicted per patch.
        hidden_size: decoder width (512).
        num_hidden_layers: decoder depth (8).
        num_attention_heads: decoder heads (16).
        mlp_ratio: MLP width / hidden_size (4).
        layer_norm_eps: LayerNorm epsilon (1e-6).
    """

    def __init__(
        self,
        encoder_dim: int,
        grid_size: int,
        patch_dim: int,
        hidden_size: int = 512,
        num_hidden_layers: int = 8,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.0,
        layer_norm_eps: float = 1e-6,
    ):
        super().__init__(
            encoder_dim, grid_size, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, layer_norm_eps,
            persistent_positions=True,
        )  # fmt: skip
        self.pred = nn.Linear(hidden_size, patch_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.reset_trunk(init.xavier_uniform_)
        init.normal_(self.mask_token, std=0.02)

    def forward(self, hidden_states: torch.Tensor, ids_restore: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        """Pixel predictions (B, N, patch_dim) of every patch.

        Args:
            hidden_states: (B, num_prefix_tokens + K, encoder_dim) encoder output, visible patches in shuffled order.
            ids_restore: (B, N) position of each patch of the grid in [visible; masked] order.
            num_prefix_tokens: CLS and register tokens at the start of `hidden_states`.
        """
        batch_size, num_patches = ids_restore.shape
        if num_patches != self.grid_size**2:
            raise ValueError(f"the decoder is built for a {self.grid_size}x{self.grid_size} grid, got {num_patches} patches")
        hidden = self.embed(hidden_states)
        prefix, visible = hidden[:, :num_prefix_tokens], hidden[:, num_prefix_tokens:]
        masked = self.mask_token.expand(batch_size, num_patches - visible.shape[1], -1)
        patches = torch.cat([visible, masked], dim=1)
        patches = patches.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        hidden = torch.cat([prefix, patches + self.position_embeddings], dim=1)
        return self.pred(self.transform(hidden)[:, num_prefix_tokens:])
