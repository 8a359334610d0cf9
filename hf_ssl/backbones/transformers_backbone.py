"""Any `transformers` vision model (ConvNeXt, Swin, ResNet, ViT, DINOv2, ...) as a backbone.

`AutoModel.from_config` builds the model; `TransformersBackbone` only makes its `pooler_output` a (batch, dim)
tensor, which is what the methods' heads and the `image-feature-extraction` pipeline need.
"""

import torch
from torch import nn
from transformers import AutoModel, PreTrainedConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling


def pool_features(last_hidden_state: torch.Tensor, pooler_output: torch.Tensor | None) -> torch.Tensor:
    """(batch, dim) features: the model's own pooler flattened (e.g. ResNet's (B, C, 1, 1)), or, for models without
    one, the mean over the spatial positions (B, C, H, W) or tokens (B, N, D) of `last_hidden_state`."""
    if pooler_output is not None:
        return pooler_output.flatten(1)
    if last_hidden_state.ndim == 4:
        return last_hidden_state.mean(dim=(2, 3))
    return last_hidden_state.mean(dim=1)


class TransformersBackbone(nn.Module):
    """Wraps `AutoModel.from_config(config)` (held as `model`) so that `pooler_output` is always (batch, dim)."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        self.model = AutoModel.from_config(config)
        if self.model.main_input_name != "pixel_values":
            raise ValueError(
                f"{type(self.model).__name__} (model_type {config.model_type!r}) takes {self.model.main_input_name!r},"
                " not images; use a vision config (or the vision sub-config of a multimodal model)"
            )

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs):
        outputs = self.model(pixel_values, return_dict=True, **kwargs)
        output = BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pool_features(outputs.last_hidden_state, outputs.get("pooler_output")),
            hidden_states=outputs.get("hidden_states"),
            attentions=outputs.get("attentions"),
        )
        return_dict = return_dict if return_dict is not None else self.model.config.return_dict
        return output if return_dict else output.to_tuple()


def transformers_feature_dim(config: PreTrainedConfig) -> int:
    """Width of the pooled features of a `transformers` vision config: the last stage's channels
    (`hidden_sizes[-1]`, ConvNeXt/ResNet/RegNet) or `hidden_size` (ViT, DINOv2, Swin)."""
    hidden_sizes = getattr(config, "hidden_sizes", None)
    if hidden_sizes:
        return hidden_sizes[-1]
    hidden_size = getattr(config, "hidden_size", None)
    if hidden_size:
        return hidden_size
    raise ValueError(f"Cannot tell the feature width of model_type {config.model_type!r} (no hidden_sizes/hidden_size)")
