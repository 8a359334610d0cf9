"""MAE: patch targets, masked MSE, tokens dropped from the encoder (count and FLOPs), deterministic features."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel, AutoModelForPreTraining

import hf_ssl  # noqa: F401  (registers the Auto classes)
from hf_ssl.modeling.losses import masked_mse_loss
from hf_ssl.modeling.mae import MaeConfig, MaeForPreTraining, MaeModel
from hf_ssl.modeling.targets import normalize_patches, patchify, unpatchify
from hf_ssl.processing.masking import RandomMaskGenerator

BACKBONE = dict(model_type="ssl_vit", image_size=16, patch_size=4, num_channels=1, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=2)  # fmt: skip


def tiny_mae(**overrides) -> MaeForPreTraining:
    torch.manual_seed(0)
    fields = dict(backbone_config=BACKBONE, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                  decoder_num_attention_heads=2) | overrides  # fmt: skip
    return MaeForPreTraining(MaeConfig(**fields)).eval()


def fixed_masks(num_images: int, num_patches: int = 16, ratio: float = 0.75, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([RandomMaskGenerator(ratio)(4, num_patches // 4, generator) for _ in range(num_images)])


def test_patchify_layout_and_round_trip():
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)  # 2 channels, 2x2 patches of 2 px
    patches = patchify(image, 2)
    assert patches.shape == (1, 4, 8)
    # patch 1 = rows 0-1, columns 2-3; pixels in (row, column, channel) order
    expected = [image[0, c, r, 2 + col] for r in range(2) for col in range(2) for c in range(2)]
    assert torch.equal(patches[0, 1], torch.stack(expected))
    assert torch.equal(unpatchify(patches, 2, (2, 2)), image)


def test_normalize_patches_matches_hand_values():
    patches = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])
    mean, var = 3.0, ((4 + 1 + 0 + 9) / 3)  # unbiased variance, as MAE's torch .var()
    expected = (patches - mean) / (var + 1e-6) ** 0.5
    assert torch.allclose(normalize_patches(patches), expected)


def test_masked_mse_loss_hand_values_and_only_masked_targets():
    pred = torch.tensor([[[1.0, 1.0], [0.0, 2.0], [3.0, 3.0]]])
    target = torch.tensor([[[0.0, 1.0], [0.0, 0.0], [1.0, 3.0]]])
    mask = torch.tensor([[True, False, True]])
    # patch 0: (1 + 0) / 2 = 0.5, patch 2: (4 + 0) / 2 = 2.0 -> mean over masked = 1.25
    assert masked_mse_loss(pred, target, mask).item() == pytest.approx(1.25)
    changed = target.clone()
    changed[0, 1] = 100.0  # a visible patch's target: no effect
    assert masked_mse_loss(pred, changed, mask).item() == pytest.approx(1.25)
    changed[0, 0] = 100.0  # a masked one: changes the loss
    assert masked_mse_loss(pred, changed, mask).item() != pytest.approx(1.25)


def test_config_defaults_and_validation():
    config = MaeConfig()
    assert (config.mask_ratio, config.decoder_hidden_size, config.decoder_num_hidden_layers) == (0.75, 512, 8)
    assert config.norm_pix_loss and config.backbone_config.pooling == "mean"
    assert config.backbone_config.position_embedding_type == "sincos"
    with pytest.raises(ValueError, match="mask_ratio"):
        MaeConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_hidden_size"):
        MaeConfig(decoder_hidden_size=30, decoder_num_attention_heads=4)
    with pytest.raises(ValueError, match="ssl_vit"):
        MaeConfig(backbone_config={"model_type": "ssl_resnet", "depth": 18})


def test_encoder_sees_only_visible_tokens():
    model = tiny_mae()
    seen = []
    model.mae.register_forward_hook(lambda module, args, output: seen.append(output.last_hidden_state.shape))
    model(global_views=torch.randn(1, 3, 1, 16, 16))
    assert seen == [(3, 1 + 4, 32)]  # CLS + 25 % of the 16 patches


def test_masked_pixels_never_reach_the_predictions_but_are_the_targets():
    model = tiny_mae()
    images, masks = torch.randn(1, 2, 1, 16, 16), fixed_masks(2)[None]
    predictions, _ = model.reconstruct(images[0], masks[0])
    loss = model(global_views=images, masks=masks).loss
    # change the pixels of one masked patch of image 0
    masked_patch = int(masks[0, 0].nonzero()[0])
    row, col = divmod(masked_patch, 4)
    changed = images.clone()
    changed[0, 0, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] += torch.randn(1, 4, 4)
    new_predictions, _ = model.reconstruct(changed[0], masks[0])
    assert torch.equal(new_predictions, predictions)
    assert model(global_views=changed, masks=masks).loss.item() != pytest.approx(loss.item())


def test_predictions_of_visible_patches_do_not_count():
    model = tiny_mae()
    images, masks = torch.randn(1, 2, 1, 16, 16), fixed_masks(2)[None]
    loss = model(global_views=images, masks=masks).loss

    def scramble_visible(module, args, output):
        return torch.where(masks[0].unsqueeze(-1), output, torch.randn_like(output))

    model.decoder.register_forward_hook(scramble_visible)
    assert model(global_views=images, masks=masks).loss.item() == pytest.approx(loss.item(), rel=1e-6)


def test_norm_pix_loss_targets():
    images, masks = torch.randn(1, 2, 1, 16, 16), fixed_masks(2)[None]
    for norm_pix_loss in (True, False):
        model = tiny_mae(norm_pix_loss=norm_pix_loss)
        predictions, _ = model.reconstruct(images[0], masks[0])
        target = patchify(images[0], 4)
        target = normalize_patches(target) if norm_pix_loss else target
        expected = ((predictions - target) ** 2).mean(-1)[masks[0]].mean()
        assert model(global_views=images, masks=masks).loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_masks_with_the_wrong_count_are_rejected():
    model = tiny_mae()
    with pytest.raises(RuntimeError, match="round"):
        model(global_views=torch.randn(1, 2, 1, 16, 16), masks=fixed_masks(2, ratio=0.5)[None])


def test_encoder_flops_scale_with_visible_tokens():
    backbone = dict(BACKBONE, image_size=32, hidden_size=64, num_attention_heads=4)

    def encoder_flops(mask_ratio: float) -> int:
        model = tiny_mae(backbone_config=backbone, mask_ratio=mask_ratio)
        with FlopCounterMode(display=False) as counter:
            model(global_views=torch.randn(1, 2, 1, 32, 32))
        return sum(counter.get_flop_counts()["MaeForPreTraining.mae"].values())

    ratio = encoder_flops(0.75) / encoder_flops(0.0)  # 16 + 1 of 64 + 1 tokens enter the blocks
    assert 0.2 < ratio < 0.3


def test_feature_model_is_deterministic_and_uses_every_patch():
    model = tiny_mae().mae
    images = torch.randn(2, 1, 16, 16)
    first, second = model(images), model(images)
    assert first.last_hidden_state.shape == (2, 1 + 16, 32)
    assert torch.equal(first.pooler_output, second.pooler_output)
    assert torch.allclose(first.pooler_output, first.last_hidden_state[:, 1:].mean(1))


def test_pretraining_lowers_the_loss_and_automodel_loads_the_encoder(tmp_path):
    model = tiny_mae().train()
    images, masks = torch.randn(1, 8, 1, 16, 16), fixed_masks(8)[None]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(global_views=images, masks=masks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]

    model.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path)
    assert isinstance(encoder, MaeModel)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(reloaded, MaeForPreTraining)
    model.eval()
    assert torch.allclose(encoder(images[0]).pooler_output, model.mae(images[0]).pooler_output, atol=1e-6)


def test_reconstruction_keeps_visible_patches_and_visualize_command(tmp_path):
    from PIL import Image

    from hf_ssl.cli import main
    from hf_ssl.evaluation.visualize import mae_reconstruction
    from hf_ssl.processing import processor_for

    model = tiny_mae()
    images = torch.randn(1, 1, 16, 16)
    masked, reconstruction = mae_reconstruction(model, images, mask_ratio=0.5, seed=0)
    masks = RandomMaskGenerator(0.5)(4, 4, torch.Generator().manual_seed(0))
    visible = ~masks.view(4, 1, 4, 1).expand(4, 4, 4, 4).reshape(16, 16)
    assert torch.equal(reconstruction[0, 0][visible], images[0, 0][visible])
    assert torch.equal(masked[0, 0][visible], images[0, 0][visible]) and masked[0, 0][~visible].abs().sum() == 0

    model.save_pretrained(tmp_path / "mae")
    processor_for(model.config).save_pretrained(tmp_path / "mae")
    Image.fromarray((torch.rand(20, 20) * 255).byte().numpy()).save(tmp_path / "image.png")
    out = tmp_path / "recon.png"
    code = main(["visualize", "mae", "--model", str(tmp_path / "mae"), "--image", str(tmp_path / "image.png"),
                 "--out", str(out), "--width", "300", "--height", "100"])  # fmt: skip
    assert code == 0 and Image.open(out).size == (300, 100)
