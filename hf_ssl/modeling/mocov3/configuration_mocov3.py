"""MoCo v3: an empirical study of training self-supervised vision transformers (Chen, Xie and He, 2021)."""

from ..base import SSLMethodConfig


class MoCoV3Config(SSLMethodConfig):
    r"""
    MoCo v3's query encoder (encoder, projector, predictor) and its momentum encoder (encoder, projector). Defaults
    are the official ViT setting (`main_moco.py`: `moco-dim 256`, `moco-mlp-dim 4096`, `moco-m 0.99`, `--moco-m-cos`,
    `--moco-t .2`); the ResNet-50 setting is `projection_num_layers=2, temperature=1.0`.

    Args:
        backbone_config: the base encoder (our ViT by default; MoCo v3 uses a fixed 2-D sin-cos position embedding,
            `position_embedding_type="sincos"`, and 12 heads for ViT-S).
        projection_hidden_dim (`int`): width of the projector's hidden layers (4096).
        projection_dim (`int`): width of the projector and predictor outputs, the space of the loss (256).
        projection_num_layers (`int`): linear layers of the projector: 3 for ViT, 2 for ResNet.
        prediction_hidden_dim (`int`): width of the predictor's hidden layer (4096).
        prediction_num_layers (`int`): linear layers of the predictor (2).
        temperature (`float`): tau of the contrastive loss (0.2 for ViT; 1.0 for ResNet-50).
        momentum (`float`): base momentum m of the momentum encoder (0.99).
        momentum_cosine (`bool`): raise m to 1 with a half-cycle cosine over the training (`--moco-m-cos`).
        stop_grad_conv1 (`bool`): keep the ViT's patch projection at its random initialisation (`--stop-grad-conv1`,
            the "random patch projection" that stabilises ViT training). ViT backbones only.
        gather_distributed (`bool`): contrast with the keys of every process (the global batch).
    """

    model_type = "mocov3"

    projection_hidden_dim: int = 4096
    projection_dim: int = 256
    projection_num_layers: int = 3
    prediction_hidden_dim: int = 4096
    prediction_num_layers: int = 2
    temperature: float = 0.2
    momentum: float = 0.99
    momentum_cosine: bool = True
    stop_grad_conv1: bool = False
    gather_distributed: bool = True

    def __post_init__(self, **kwargs):
        for name in (
            "projection_hidden_dim", "projection_dim", "projection_num_layers", "prediction_hidden_dim",
            "prediction_num_layers",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        super().__post_init__(**kwargs)
        if self.stop_grad_conv1 and getattr(self.backbone_config, "model_type", None) != "ssl_vit":
            raise ValueError(
                "stop_grad_conv1 freezes a ViT patch projection; the backbone is "
                f"{getattr(self.backbone_config, 'model_type', None)!r}, not 'ssl_vit'"
            )
