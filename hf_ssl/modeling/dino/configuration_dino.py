"""DINO: self-distillation with no labels (Caron et al., 2021)."""

from ..base import SSLMethodConfig


class DinoConfig(SSLMethodConfig):
    r"""
    DINO's student/teacher ViT (or ResNet) and its projection head. Defaults are `main_dino.py`'s for ViT-S/16.

    Args:
        backbone_config: the encoder (default: our ViT, base size; use `SSLViTConfig.from_size("small", ...)`).
        head_out_dim (`int`): K, the number of prototypes of the last layer (65536).
        head_hidden_dim (`int`): width of the head's MLP (2048).
        head_bottleneck_dim (`int`): width before the weight-normalised last layer (256).
        head_num_layers (`int`): MLP layers before the bottleneck output (3).
        head_use_bn (`bool`): BatchNorm in the head (used for ResNets in the paper).
        norm_last_layer (`bool`): fix the weight norm of the last layer to 1 (stabilises ViT training).
        student_temp (`float`): tau_s (0.1).
        teacher_temp (`float`): tau_t after warm-up (0.04).
        warmup_teacher_temp (`float`): tau_t at the first step (0.04).
        warmup_teacher_temp_epochs (`int`): epochs of the linear warm-up of tau_t, per epoch as the original
            (0: none; the paper uses 30 with `teacher_temp` 0.07).
        center_momentum (`float`): m of the EMA centre of the teacher outputs (0.9).
        momentum_teacher (`float`): base EMA momentum of the teacher, raised to 1 by a cosine schedule (0.996).
        freeze_last_layer_epochs (`int`): epochs during which the last layer of the student head is not updated (1).
    """

    model_type = "dino"

    head_out_dim: int = 65536
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    head_num_layers: int = 3
    head_use_bn: bool = False
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    freeze_last_layer_epochs: int = 1

    def __post_init__(self, **kwargs):
        for name in ("head_out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("center_momentum", "momentum_teacher"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("warmup_teacher_temp_epochs", "freeze_last_layer_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__(**kwargs)
