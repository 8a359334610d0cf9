"""What every method shares: a config that nests a backbone config, the feature-extraction model, and the
classification model for `Trainer` fine-tuning.

A method `<M>` writes only its config (defaults and validation of its own fields) and one line per class:

    class DinoPreTrainedModel(SSLPreTrainedModel):
        config_class = DinoConfig
        base_model_prefix = "dino"

    class DinoModel(SSLModel, DinoPreTrainedModel): ...
    class DinoForImageClassification(SSLForImageClassification, DinoPreTrainedModel): ...

`base_model_prefix` names the attribute that holds the `<M>Model` inside the other classes, so that
`AutoModel.from_pretrained` on a pretraining or classification checkpoint loads exactly that encoder.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.utils import ModelOutput

from ..backbones import SSLViTConfig, build_backbone, feature_dim
from .heads import SSLHead


class SSLMethodConfig(PreTrainedConfig):
    r"""
    Base of every method config: the backbone's own config nested under `backbone_config` (our `ssl_vit` by
    default, `ssl_resnet`, or any `transformers` vision config), and the pooling the method's paper evaluates.

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*): the encoder; a dict needs a `model_type`.
    """

    sub_configs_defaults = {"backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="ssl_vit")}
    # What `pooler_output` is for this method's ViTs unless the backbone config says otherwise.
    default_pooling: ClassVar[str] = "cls"

    backbone_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        apply_default_pooling = self.backbone_config is None or (
            isinstance(self.backbone_config, dict) and "pooling" not in self.backbone_config
        )
        super().__post_init__(**kwargs)
        if apply_default_pooling and isinstance(self.backbone_config, SSLViTConfig):
            self.backbone_config.pooling = self.default_pooling

    @property
    def hidden_size(self) -> int:
        """Width of `pooler_output`."""
        return feature_dim(self.backbone_config)


class SSLPreTrainedModel(PreTrainedModel):
    """Common attributes; each method subclasses it once to set `config_class` and `base_model_prefix`."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True

    @torch.no_grad()
    def initialize_weights(self):
        """`transformers`' initialisation, then the original one of the pretraining heads (inner heads first).

        Done here rather than in `_init_weights`, which `transformers` skips for modules without parameters of
        their own (the heads are containers); weights loaded from a checkpoint are left untouched either way.
        """
        super().initialize_weights()
        for module in reversed(list(self.modules())):
            if isinstance(module, SSLHead):
                module.reset_parameters()

    def freeze_untrained_parameters(self) -> None:
        """Set `requires_grad=False` on the parameters the optimizer must not train (EMA teachers, fixed weight
        norms). Pretraining models override it and call it at the end of `__init__`."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, then `freeze_untrained_parameters`: `transformers` loads every
        floating-point parameter as trainable."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded).freeze_untrained_parameters()
        return loaded


class SSLModel(SSLPreTrainedModel):
    """The feature extractor (`AutoModel`): the backbone, returning `BaseModelOutputWithPooling` whose
    `pooler_output` is the representation the method's paper evaluates."""

    def __init__(self, config: SSLMethodConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        return self.backbone(pixel_values, **kwargs)


class SSLForImageClassification(SSLPreTrainedModel):
    """A linear classifier on `pooler_output`, for `Trainer` fine-tuning (`AutoModelForImageClassification`)."""

    model_class: ClassVar[type[SSLModel]]

    def __init__(self, config: SSLMethodConfig):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.model_class(config))
        num_labels = config.num_labels or 0
        self.classifier = nn.Linear(config.hidden_size, num_labels) if num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs
    ) -> ImageClassifierOutput:
        outputs = getattr(self, self.base_model_prefix)(pixel_values, **kwargs)
        logits = self.classifier(outputs.pooler_output)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class SSLPreTrainingOutput(ModelOutput):
    """What every `<M>ForPreTraining.forward` returns.

    Args:
        loss: the scalar the engine back-propagates.
        logs: detached scalars to log (loss terms, temperatures, momentum, teacher entropy, ...).
        embeddings: (batch, dim) embeddings of one view for the health monitors (std, RankMe); optional.
    """

    loss: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] | None = None
    embeddings: torch.Tensor | None = None


def check_two_views(global_views: torch.Tensor, method: str) -> None:
    """The input check of the two-view methods: `global_views` must be (2, batch, C, H, W)."""
    if global_views.ndim != 5 or global_views.shape[0] != 2:
        raise ValueError(f"{method} takes global_views of shape (2, batch, C, H, W), got {tuple(global_views.shape)}")
