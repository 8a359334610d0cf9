"""Hub-format `transformers` models -> hf_ssl models, to continue pretraining from facebook/vit-mae-*, ijepa_*,
vit-msn-* (and BEiT / data2vec-vision models that our ViT computes exactly).

Each test builds a random-init `transformers` model with a tiny config, saves it with `save_pretrained`, imports
the folder (`from_transformers`) as the bare backbone, the method's feature model (what `AutoModel` loads) and the
method's pretraining model, and compares features (max abs diff <= 1e-5, fp32).
"""

import pytest
import torch
from transformers import (
    AutoModel,
    BeitConfig,
    BeitModel,
    Data2VecVisionConfig,
    Data2VecVisionModel,
    IJepaConfig,
    IJepaModel,
    ViTMAEConfig,
    ViTMAEForPreTraining,
    ViTMAEModel,
    ViTMSNConfig,
    ViTMSNModel,
)

from hf_ssl import SSLViTModel
from hf_ssl.convert.export import from_transformers
from hf_ssl.modeling.data2vec_ssl import Data2VecSSLForPreTraining, Data2VecSSLModel
from hf_ssl.modeling.mae import MaeForPreTraining, MaeModel
from hf_ssl.modeling.msn import MSNForPreTraining, MSNModel
from hf_ssl.modeling.ssl_ijepa import IJepaSSLForPreTraining, IJepaSSLModel

ATOL = 1e-5
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8, layer_norm_eps=1e-6)
MAE_DECODER = dict(decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                   decoder_intermediate_size=48)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter away from its init, so a wrong key shows in the features."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


def saved(model, tmp_path):
    model.save_pretrained(tmp_path / "source")
    return tmp_path / "source"


def pixels(size=32, seed=1):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"max abs diff {diff}"


def noise_and_keep(num_patches: int, mask_ratio: float, seed: int = 2):
    """ViTMAE's noise and the patch indices it keeps (in its shuffled order)."""
    noise = torch.rand(2, num_patches, generator=torch.Generator().manual_seed(seed))
    keep = int(num_patches * (1 - mask_ratio))
    return noise, noise.argsort(dim=1)[:, :keep]


# --------------------------------------------------------------------------------------------------------- MAE


def test_vit_mae_model_encoder_with_and_without_masking(tmp_path):
    source = randomized(ViTMAEModel(ViTMAEConfig(**TINY, mask_ratio=0.75)))
    folder = saved(source, tmp_path)
    ours = from_transformers(folder)
    assert isinstance(ours, SSLViTModel)
    config = ours.config
    assert (config.position_embedding_type, config.pooling, config.interpolate_offset) == ("sincos", "mean", 0.0)
    x = pixels()
    noise, keep = noise_and_keep(16, 0.75)
    with torch.no_grad():
        assert_close(ours(x, keep_indices=keep).last_hidden_state, source(x, noise=noise).last_hidden_state)
        # no masking: ViTMAE still shuffles by its noise, an increasing noise keeps the grid order
        source.config.mask_ratio = 0.0
        for size in (32, 48):
            x = pixels(size)
            order = torch.arange((size // 8) ** 2, dtype=torch.float).expand(2, -1)
            theirs = source(x, noise=order, interpolate_pos_encoding=size != 32).last_hidden_state
            output = ours(x)
            assert_close(output.last_hidden_state, theirs)
            assert_close(output.pooler_output, theirs[:, 1:].mean(dim=1))


def test_vit_mae_for_pretraining_keeps_the_decoder(tmp_path):
    source = randomized(ViTMAEForPreTraining(ViTMAEConfig(**TINY, **MAE_DECODER, mask_ratio=0.75,
                                                          norm_pix_loss=True)))
    with torch.no_grad():  # ViTMAE's decoder gives the CLS token no position (a zero row); ours has no row for it
        source.decoder.decoder_pos_embed[:, 0] = 1.0
        with pytest.raises(ValueError, match="CLS position is not zero"):
            from_transformers(source, MaeForPreTraining)
        source.decoder.decoder_pos_embed[:, 0] = 0.0
    folder = saved(source, tmp_path)
    model = from_transformers(folder, MaeForPreTraining)
    assert isinstance(model, MaeForPreTraining)
    config = model.config
    assert (config.decoder_hidden_size, config.decoder_mlp_ratio, config.mask_ratio) == (16, 3.0, 0.75)
    x = pixels()
    noise, keep = noise_and_keep(16, 0.75)
    masks = torch.ones(2, 16, dtype=torch.bool).scatter(1, keep, False)
    with torch.no_grad():
        expected = source(x, noise=noise)
        predictions, _ = model.reconstruct(x, masks)
        assert_close(predictions, expected.logits)
        loss = model(x[None], masks=masks[None]).loss
        assert abs(loss.item() - expected.loss.item()) <= ATOL

    # AutoModel loads the encoder (MaeModel) of the saved pretraining model
    model.save_pretrained(tmp_path / "ours")
    encoder = AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert type(encoder) is MaeModel
    with torch.no_grad():
        assert_close(encoder(x, keep_indices=keep).last_hidden_state, source.vit(x, noise=noise).last_hidden_state)


def test_vit_mae_model_without_decoder_gives_an_initialised_decoder(tmp_path, caplog):
    source = randomized(ViTMAEModel(ViTMAEConfig(**TINY, **MAE_DECODER)))
    model = from_transformers(saved(source, tmp_path), MaeForPreTraining)
    assert "has no MAE decoder" in caplog.text
    x, (noise, keep) = pixels(), noise_and_keep(16, 0.75)
    with torch.no_grad():
        assert_close(model.mae(x, keep_indices=keep).last_hidden_state, source(x, noise=noise).last_hidden_state)


# ------------------------------------------------------------------------------------------------- I-JEPA, MSN


def test_ijepa_model_without_cls_token_mean_pooled(tmp_path):
    source = randomized(IJepaModel(IJepaConfig(**TINY)))
    folder = saved(source, tmp_path)
    backbone = from_transformers(folder)
    feature_model = from_transformers(folder, IJepaSSLModel)
    pretraining = from_transformers(folder, IJepaSSLForPreTraining, predictor_hidden_size=16,
                                    predictor_num_hidden_layers=1)
    assert not backbone.config.use_cls_token and backbone.config.pooling == "mean"
    for size in (32, 48):
        x = pixels(size)
        with torch.no_grad():
            theirs = source(x, interpolate_pos_encoding=size != 32).last_hidden_state
            assert_close(backbone(x).last_hidden_state, theirs)
            for model in (feature_model, pretraining.ijepa, pretraining.encoder):  # target and context encoder
                assert_close(model(x).pooler_output, theirs.mean(dim=1))


def test_vit_msn_model_to_target_and_anchor_encoders(tmp_path):
    source = randomized(ViTMSNModel(ViTMSNConfig(**TINY)))
    folder = saved(source, tmp_path)
    pretraining = from_transformers(folder, MSNForPreTraining, projection_hidden_dim=16, projection_dim=8,
                                    num_prototypes=4)
    pretraining.save_pretrained(tmp_path / "ours")
    encoder = AutoModel.from_pretrained(tmp_path / "ours").eval()
    assert type(encoder) is MSNModel
    for size in (32, 48):
        x = pixels(size)
        with torch.no_grad():
            theirs = source(x, interpolate_pos_encoding=size != 32).last_hidden_state
            for model in (encoder, pretraining.encoder):
                output = model(x)
                assert_close(output.last_hidden_state, theirs)
                assert_close(output.pooler_output, theirs[:, 0])


# ---------------------------------------------------------------------------------------------- BEiT, data2vec

BEIT_EXACT = dict(use_absolute_position_embeddings=True, use_mean_pooling=False, use_mask_token=True,
                  layer_scale_init_value=0.1)


@pytest.mark.parametrize("config_class, model_class", [(BeitConfig, BeitModel),
                                                       (Data2VecVisionConfig, Data2VecVisionModel)])
def test_beit_and_data2vec_vision_with_absolute_positions(tmp_path, config_class, model_class):
    source = randomized(model_class(config_class(**TINY, **BEIT_EXACT)))
    folder = saved(source, tmp_path)
    backbone = from_transformers(folder)
    assert backbone.config.layerscale_value == 0.1
    assert torch.equal(backbone.embeddings.mask_token, source.embeddings.mask_token[0])
    # BEiT's key projection has no bias: ours is zero there, the query and value biases are BEiT's
    qkv_bias = backbone.layers[0].attn.qkv.bias
    assert torch.all(qkv_bias[32:64] == 0) and torch.any(qkv_bias[:32] != 0)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[:, 3:9] = True
    x = pixels()
    with torch.no_grad():
        expected = source(x, bool_masked_pos=masks)
        output = backbone(x, bool_masked_pos=masks)
        assert_close(output.last_hidden_state, expected.last_hidden_state)
        assert_close(output.pooler_output, expected.last_hidden_state[:, 0])  # use_mean_pooling=False: the CLS
        theirs = source(pixels(48), interpolate_pos_encoding=True).last_hidden_state
        assert_close(backbone(pixels(48)).last_hidden_state, theirs)
    data2vec = from_transformers(folder, Data2VecSSLForPreTraining, top_k_layers=2)
    with torch.no_grad():
        assert_close(data2vec.teacher(x).last_hidden_state, source(x).last_hidden_state)
    assert isinstance(from_transformers(source, Data2VecSSLModel, top_k_layers=2), Data2VecSSLModel)


@pytest.mark.parametrize("settings, message", [
    (dict(use_relative_position_bias=True), "relative position bias"),
    (dict(use_shared_relative_position_bias=True), "relative position bias"),
    (dict(use_mean_pooling=True), "use_mean_pooling"),
    (dict(use_absolute_position_embeddings=False), "absolute position embeddings"),
])
def test_beit_that_our_vit_cannot_compute_is_refused(settings, message):
    config = BeitConfig(**TINY, **{**BEIT_EXACT, **settings})
    with pytest.raises(ValueError, match=message):
        from_transformers(BeitModel(config))


def test_unknown_tensor_is_refused_not_dropped():
    source = ViTMSNModel(ViTMSNConfig(**TINY))
    source.register_buffer("extra_scale", torch.ones(3))
    with pytest.raises(ValueError, match="'extra_scale' has no place"):
        from_transformers(source)
