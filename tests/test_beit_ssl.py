"""BEiT: k-means patch tokenizer (fit, save/load, CLI), blockwise masking, cross-entropy on masked tokens only."""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_ssl  # noqa: F401
from hf_ssl.cli import main
from hf_ssl.modeling.beit_ssl import (
    BeitSSLConfig,
    BeitSSLForPreTraining,
    BeitSSLModel,
    KMeansPatchTokenizer,
    fit_kmeans_tokenizer,
)
from hf_ssl.modeling.beit_ssl.tokenizer import kmeans, nearest_centroid
from hf_ssl.modeling.losses import masked_token_cross_entropy

BACKBONE = dict(model_type="ssl_vit", image_size=16, patch_size=4, num_channels=1, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=2)  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokenizer")
    torch.manual_seed(0)
    tokenizer = fit_kmeans_tokenizer(torch.randn(40, 1, 16, 16), codebook_size=16, patch_size=4, num_iterations=3)
    tokenizer.save_pretrained(path)
    return path


def tiny_beit(tokenizer_dir) -> BeitSSLForPreTraining:
    torch.manual_seed(0)
    config = AutoConfig.for_model("beit_ssl", backbone_config=BACKBONE, tokenizer_name_or_path=str(tokenizer_dir),
                                  min_num_patches=2)  # fmt: skip
    return AutoModelForPreTraining.from_config(config)


def test_kmeans_recovers_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=generator)).flatten(0, 1)
    found = kmeans(points, 3, num_iterations=5, generator=generator)
    order = nearest_centroid(centres, found)
    assert sorted(order.tolist()) == [0, 1, 2]
    assert torch.allclose(found[order], centres, atol=0.1)


def test_tokenizer_assigns_nearest_centroid_and_round_trips(tmp_path, tokenizer_dir):
    tokenizer = AutoModel.from_pretrained(tokenizer_dir)
    assert isinstance(tokenizer, KMeansPatchTokenizer) and tokenizer.codebook.abs().sum() > 0
    images = torch.randn(2, 1, 16, 16)
    tokens = tokenizer(images)
    patches = images.unfold(2, 4, 4).unfold(3, 4, 4).reshape(2, 16, 16)  # (B, N, 16) row-major, 1 channel
    distances = torch.cdist(patches, tokenizer.codebook[None].expand(2, -1, -1))
    assert tokens.shape == (2, 16) and torch.equal(tokens, distances.argmin(-1))


def test_masked_token_cross_entropy_hand_values():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # masked patches 0 and 2 of one image
    tokens = torch.tensor([[1, 0, 0]])
    mask = torch.tensor([[True, False, True]])
    # patch 0: -log(3/4), patch 2: -log(1/2)
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert masked_token_cross_entropy(logits, tokens, mask).item() == pytest.approx(expected, rel=1e-6)


def test_config_defaults_and_validation(tokenizer_dir):
    config = BeitSSLConfig()
    assert (config.mask_ratio, config.min_num_patches, config.min_aspect) == (0.4, 16, 0.3)
    mismatched = BeitSSLConfig(backbone_config=dict(BACKBONE, patch_size=8), tokenizer_name_or_path=str(tokenizer_dir))
    with pytest.raises(ValueError, match="patch_size"):
        BeitSSLForPreTraining(mismatched)
    with pytest.raises(ValueError, match="tokenizer"):
        BeitSSLForPreTraining(BeitSSLConfig(backbone_config=BACKBONE))


def test_loss_is_cross_entropy_of_tokenizer_ids_on_masked_patches(tokenizer_dir):
    model = tiny_beit(tokenizer_dir).eval()
    assert not any(p.requires_grad for p in model.tokenizer.parameters())
    images = torch.randn(1, 2, 1, 16, 16)
    masks = torch.zeros(1, 2, 16, dtype=torch.bool)
    masks[..., [5, 6, 9, 10]] = True
    output = model(global_views=images, masks=masks)
    encoded = model.beit_ssl(images[0], bool_masked_pos=masks[0]).last_hidden_state
    logits = model.head(encoded[:, 1:])
    tokens = model.tokenizer(images[0])
    expected = F.cross_entropy(logits[masks[0]], tokens[masks[0]])
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # the tokens of visible patches are not targets: changing a visible patch's token leaves the loss alone
    changed = tokens.clone()
    changed[~masks[0]] = (changed[~masks[0]] + 1) % 16
    assert masked_token_cross_entropy(logits[masks[0]], changed, masks[0]).item() == pytest.approx(expected.item())


def test_smoke_training_and_self_contained_checkpoint(tmp_path, tokenizer_dir):
    model = tiny_beit(tokenizer_dir)
    assert torch.equal(model.tokenizer.codebook, AutoModel.from_pretrained(tokenizer_dir).codebook)
    images = torch.randn(1, 8, 1, 16, 16)
    masks = torch.stack([model.mask_generator(4, 4, torch.Generator().manual_seed(i)) for i in range(8)])[None]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(global_views=images, masks=masks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]

    saved_tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_dir, saved_tokenizer)
    model.config.tokenizer_name_or_path = str(saved_tokenizer)
    model.save_pretrained(tmp_path / "pretraining")
    shutil.rmtree(saved_tokenizer)  # the checkpoint carries the tokenizer's config and weights
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "pretraining")
    assert torch.equal(reloaded.tokenizer.codebook, model.tokenizer.codebook)
    encoder = AutoModel.from_pretrained(tmp_path / "pretraining").eval()
    assert isinstance(encoder, BeitSSLModel)
    assert torch.allclose(encoder(images[0]).pooler_output, model.eval().beit_ssl(images[0]).pooler_output, atol=1e-6)


def test_fit_tokenizer_command(tmp_path, capsys):
    code = main(["fit-tokenizer", "--out", str(tmp_path), "--image-size", "28", "--patch-size", "7",
                 "--num-channels", "1", "--codebook-size", "8", "--max-images", "50", "--iterations", "2"])  # fmt: skip
    assert code == 0 and "8-token" in capsys.readouterr().out
    tokenizer = AutoModel.from_pretrained(tmp_path)
    assert tokenizer.config.patch_size == 7 and tokenizer.codebook.shape == (8, 49)
