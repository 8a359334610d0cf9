"""Distillation of a large frozen teacher into a smaller student, as DINOv2 trains its small models."""

from ..dinov2_ssl.configuration_dinov2_ssl import Dinov2SSLConfig


class DistillConfig(Dinov2SSLConfig):
    r"""
    DINOv2's distillation (Oquab et al., 2023, Sec. 5): the training loop of DINOv2 with a frozen, larger teacher
    in place of the EMA teacher, the iBOT loss on every patch of the two global crops (no masking), and a spare EMA
    of the student as the final model. Every `Dinov2SSLConfig` field keeps its meaning for the student, its heads
    and the losses; `backbone_config` is the student's encoder.

    Args (besides DINOv2's):
        teacher_name_or_path (`str`, *optional*): the teacher: a folder or Hub id of any `hf_ssl` model (a
            pretraining checkpoint of `dino`, `ibot` or `dinov2_ssl` brings its teacher heads) or any `transformers`
            vision model loaded with `AutoModel`.
        teacher_config (`dict`, *optional*): the teacher's config. Filled from `teacher_name_or_path` when the model
            is built (so a saved distillation checkpoint rebuilds its teacher without the original files); alone, it
            builds a randomly initialised teacher (tests).
        teacher_heads (`bool`, *optional*): whether the teacher's own heads (from its pretraining checkpoint) make the
            targets, as in DINOv2. `None`: decided when the model is built (yes when the checkpoint has them).
            Otherwise both the teacher and the student get fresh heads; the teacher's stay at their random
            initialisation (a fixed random projection of its features onto the prototypes), the student's are
            trained. Teacher heads fix `head_out_dim`/`patch_out_dim`, which must match them.
    """

    model_type = "distill"

    koleo_loss_weight: float = 0.1
    teacher_name_or_path: str | None = None
    teacher_config: dict | None = None
    teacher_heads: bool | None = None

    def __post_init__(self, **kwargs):
        if self.teacher_name_or_path is not None and not isinstance(self.teacher_name_or_path, str):
            raise ValueError(f"teacher_name_or_path must be a string, got {self.teacher_name_or_path!r}")
        if self.teacher_config is not None and not isinstance(self.teacher_config, dict):
            to_dict = getattr(self.teacher_config, "to_dict", None)
            if to_dict is None:
                raise ValueError(f"teacher_config must be a dict or a config, got {type(self.teacher_config).__name__}")
            self.teacher_config = to_dict()
        if self.teacher_config is not None and "model_type" not in self.teacher_config:
            raise ValueError("teacher_config needs a 'model_type'")
        super().__post_init__(**kwargs)
