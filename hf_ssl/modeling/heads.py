"""Heads put on top of an encoder during pretraining and thrown away afterwards: projectors (SimCLR, BYOL,
SimSiam, VICReg, Barlow Twins, MoCo) and DINO's prototype head.

Every head is an `SSLHead`: it initialises itself like its original (`reset_parameters`), both when built and
when `transformers` initialises a model's weights (`SSLPreTrainedModel.initialize_weights`), through the
`transformers.initialization` functions, which leave weights loaded from a checkpoint untouched.
"""

import math

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
