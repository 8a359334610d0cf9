"""The method contract end to end for DINO: Auto classes, pooling, save/load round trips."""

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

import hf_ssl
from hf_ssl import DinoConfig, DinoForImageClassification, DinoModel, SSLViTConfig, SSLViTModel


def test_registered_model_types_load_through_auto_classes(tmp_path, tiny_vit_config):
    model = DinoModel(DinoConfig(backbone_config=tiny_vit_config)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, DinoConfig) and isinstance(config.backbone_config, SSLViTConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, DinoModel)
    pixels = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(pixels).pooler_output, model(pixels).pooler_output, rtol=0, atol=0)


def test_dino_pools_the_cls_token_after_the_final_norm(tiny_vit_config):
    model = DinoModel(DinoConfig(backbone_config=tiny_vit_config)).eval()
    assert model.config.backbone_config.pooling == "cls"
    out = model(torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state[:, 0])
    assert out.last_hidden_state.shape == (3, 1 + 16, 32)


def test_pooling_switches_and_registers_are_never_pooled():
    config = SSLViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_register_tokens=3, pooling="cls+mean",
    )
    model = DinoModel(DinoConfig(backbone_config=config)).eval()
    out = model(torch.randn(2, 3, 32, 32))
    tokens = out.last_hidden_state
    assert tokens.shape[1] == 1 + 3 + 16
    expected = torch.cat([tokens[:, 0], tokens[:, 4:].mean(1)], dim=1)
    torch.testing.assert_close(out.pooler_output, expected)
    assert model.config.hidden_size == 64


def test_classification_model_loads_the_feature_model_and_computes_cross_entropy(tmp_path, tiny_vit_config):
    DinoModel(DinoConfig(backbone_config=tiny_vit_config)).save_pretrained(tmp_path / "features")
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "features", num_labels=4).eval()
    assert isinstance(classifier, DinoForImageClassification)
    features = AutoModel.from_pretrained(tmp_path / "features").eval()
    pixels, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    out = classifier(pixels, labels=labels)
    torch.testing.assert_close(out.logits, classifier.classifier(features(pixels).pooler_output))
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))

    # and the reverse: the feature model out of a fine-tuned classification checkpoint
    classifier.save_pretrained(tmp_path / "classifier")
    reloaded = AutoModel.from_pretrained(tmp_path / "classifier").eval()
    torch.testing.assert_close(reloaded(pixels).pooler_output, features(pixels).pooler_output)


def test_backbone_is_a_model_of_its_own(tmp_path, tiny_vit_config):
    vit = SSLViTModel(tiny_vit_config).eval()
    vit.save_pretrained(tmp_path)
    assert isinstance(AutoModel.from_pretrained(tmp_path), SSLViTModel)
    assert AutoConfig.for_model("ssl_vit").model_type == "ssl_vit"
    assert hf_ssl.__version__
