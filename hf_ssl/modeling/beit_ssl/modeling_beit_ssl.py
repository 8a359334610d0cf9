"""BEiT models. `BeitSSLModel` is the encoder the paper evaluates: every patch, no masking, mean of the patch tokens."""

import torch
from transformers import AutoModel
from transformers import initialization as init

from ...processing.masking import BlockMaskGenerator, flatten_masked_views
from ..base import SSLForImageClassification, SSLModel, SSLPreTrainedModel, SSLPreTrainingOutput
from ..heads import LinearPredictionHead
from ..losses import masked_token_cross_entropy
from .configuration_beit_ssl import BeitSSLConfig


class BeitSSLPreTrainedModel(SSLPreTrainedModel):
    config_class = BeitSSLConfig
    base_model_prefix = "beit_ssl"


class BeitSSLModel(SSLModel, BeitSSLPreTrainedModel):
    """BEiT feature extractor: the ViT on all patches (no masking at inference), mean of the patch tokens."""


class BeitSSLForImageClassification(SSLForImageClassification, BeitSSLPreTrainedModel):
    """BEiT encoder with a linear classifier on `pooler_output`."""

    model_class = BeitSSLModel


class BeitSSLForPreTraining(BeitSSLPreTrainedModel):
    """BEiT masked image modeling (Bao et al., 2022).

    Blocks of patches (BEiT's blockwise masking) are replaced by the mask token at the encoder's input; a linear
    head (`head`) over the masked output tokens predicts, by cross-entropy, the visual token that the frozen
    `tokenizer` assigns to each masked patch of the uncorrupted image. The tokenizer is built from
    `config.tokenizer_config`; its weights come from `config.tokenizer_name_or_path` when the model is
    initialised, or from the pretraining checkpoint.
    """

    def __init__(self, config: BeitSSLConfig):
        super().__init__(config)
        tokenizer_config = config.resolved_tokenizer_config()
        self.beit_ssl = BeitSSLModel(config)
        self.head = LinearPredictionHead(config.backbone_config.hidden_size, tokenizer_config.codebook_size)
        self.tokenizer = AutoModel.from_config(tokenizer_config)
        self.mask_generator = BlockMaskGenerator(
            config.mask_ratio, min_num_patches=config.min_num_patches, max_num_patches=config.max_num_patches,
            min_aspect=config.min_aspect,
        )  # fmt: skip
        self.post_init()
        self.freeze_untrained_parameters()

    def freeze_untrained_parameters(self) -> None:
        """The tokenizer is fixed."""
        self.tokenizer.requires_grad_(False)

    @torch.no_grad()
    def initialize_weights(self):
        """The usual initialisation, then the tokenizer's weights from `tokenizer_name_or_path`, unless they were
        loaded from a checkpoint (done here: `transformers` skips `_init_weights` of a module without own tensors)."""
        super().initialize_weights()
        current = self.tokenizer.state_dict(keep_vars=True)
        if self.config.tokenizer_name_or_path is not None and not all(
            getattr(tensor, "_is_hf_initialized", False) for tensor in current.values()
        ):
            pretrained = AutoModel.from_pretrained(self.config.tokenizer_name_or_path).state_dict()
            for key, tensor in current.items():
                init.copy_(tensor, pretrained[key])

    def train(self, mode: bool = True):
        """Train mode everywhere but in the frozen tokenizer."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    def forward(self, global_views: torch.Tensor, masks: torch.Tensor | None = None, **kwargs) -> SSLPreTrainingOutput:
        """BEiT loss on `global_views` (V, B, C, H, W) with `masks` (V, B, N) from the data loader or drawn here."""
        patch_size = self.config.backbone_config.patch_size
        pixel_values, masks = flatten_masked_views(global_views, masks, self.mask_generator, patch_size)
        with torch.no_grad():
            tokens = self.tokenizer(pixel_values)
        encoded = self.beit_ssl(pixel_values, bool_masked_pos=masks)
        masked_logits = self.head(self.beit_ssl.backbone.patch_tokens(encoded.last_hidden_state)[masks])
        loss = masked_token_cross_entropy(masked_logits, tokens, masks)
        with torch.no_grad():
            accuracy = (masked_logits.argmax(-1) == tokens[masks]).float().mean()
        batch_size = global_views.shape[1]
        return SSLPreTrainingOutput(
            loss=loss,
            logs={"loss": loss.detach(), "token_accuracy": accuracy},
            embeddings=encoded.pooler_output[:batch_size].detach(),
        )
