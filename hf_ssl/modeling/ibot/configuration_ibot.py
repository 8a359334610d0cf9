"""iBOT: image BERT pre-training with an online tokenizer (Zhou et al., 2022)."""

from ..dino.configuration_dino import DinoConfig


class IBOTConfig(DinoConfig):
    r"""
    iBOT: DINO's [CLS] self-distillation plus masked image modeling with the EMA teacher as the online tokenizer.
    Every DINO field keeps its meaning (the [CLS] head and loss); the defaults are iBOT's ViT-S/16 800-epoch run
    (`ibot/README.md`: 8192 prototypes, shared head, `norm_last_layer` off, teacher temperatures 0.04 -> 0.07 over 30
    epochs).

    Args:
        patch_out_dim (`int`): prototypes of the patch head (8192; must equal `head_out_dim` with `shared_head`).
        shared_head (`bool`): one head for the [CLS] and the patch tokens (iBOT's choice); otherwise a separate patch
            head (DINOv2's).
        patch_teacher_temp (`float`): the teacher temperature of the patch targets after warm-up (0.07).
        warmup_patch_teacher_temp (`float`): at the first epoch (0.04); the warm-up has DINO's
            `warmup_teacher_temp_epochs`.
        patch_center_momentum (`float`): momentum of the centre of the teacher's patch outputs (0.9).
        cls_loss_weight (`float`): lambda_1 of the [CLS] loss (1.0).
        patch_loss_weight (`float`): lambda_2 of the masked-patch loss (1.0).
    Masks come with the batch (`masks`, (V_g, B, N), from `views.masking: {type: block, mask_ratio: [0.1, 0.5],
    mask_probability: 0.5}`); without them the patch loss is 0 and iBOT is DINO.
    """

    model_type = "ibot"

    head_out_dim: int = 8192
    norm_last_layer: bool = False
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: int = 30
    patch_out_dim: int = 8192
    shared_head: bool = True
    patch_teacher_temp: float = 0.07
    warmup_patch_teacher_temp: float = 0.04
    patch_center_momentum: float = 0.9
    cls_loss_weight: float = 1.0
    patch_loss_weight: float = 1.0

    def __post_init__(self, **kwargs):
        if self.patch_out_dim < 1:
            raise ValueError(f"patch_out_dim must be >= 1, got {self.patch_out_dim}")
        if self.shared_head and self.patch_out_dim != self.head_out_dim:
            raise ValueError(
                f"shared_head needs patch_out_dim == head_out_dim, got {self.patch_out_dim} and {self.head_out_dim}"
            )
        for name in ("patch_teacher_temp", "warmup_patch_teacher_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.patch_center_momentum <= 1.0:
            raise ValueError(f"patch_center_momentum must be in [0, 1], got {self.patch_center_momentum}")
        for name in ("cls_loss_weight", "patch_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__(**kwargs)
