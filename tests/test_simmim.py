"""SimMIM: mask token, 32-px mask squares, L1 on masked pixels only."""

import pytest
import torch
from transformers import AutoModel

import hf_ssl  # noqa: F401
from hf_ssl.modeling.losses import masked_l1_loss
from hf_ssl.modeling.simmim import SimMIMConfig, SimMIMForPreTraining, SimMIMModel
from hf_ssl.modeling.targets import patchify

BACKBONE = dict(model_type="ssl_vit", image_size=16, patch_size=2, num_channels=1, hidden_size=32,
                num_hidden_layers=2, num_attention_heads=2)  # fmt: skip


def tiny_simmim(**overrides) -> SimMIMForPreTraining:
    torch.manual_seed(0)
    return SimMIMForPreTraining(SimMIMConfig(backbone_config=BACKBONE, mask_patch_size=4, **overrides)).eval()


def test_masked_l1_loss_hand_values():
    pred = torch.tensor([[[1.0, 2.0], [5.0, 5.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [1.0, -3.0]]])
    mask = torch.tensor([[True, False, True]])
    # masked pixels: |1| + |2| + |-1| + |3| = 7 over 4 pixels
    assert masked_l1_loss(pred, target, mask).item() == pytest.approx(7 / 4)
    target[0, 1] = 50.0  # a visible patch's target: no effect
    assert masked_l1_loss(pred, target, mask).item() == pytest.approx(7 / 4)


def test_config_defaults_and_validation():
    config = SimMIMConfig()
    assert (config.mask_ratio, config.mask_patch_size, config.mask_unit) == (0.6, 32, 2)  # ViT-B/16
    assert config.backbone_config.pooling == "mean"
    with pytest.raises(ValueError, match="mask_patch_size"):
        SimMIMConfig(backbone_config=BACKBONE, mask_patch_size=3)
    with pytest.raises(ValueError, match="mask_ratio"):
        SimMIMConfig(mask_ratio=0.0)


def test_model_masks_whole_squares():
    model = tiny_simmim()  # 8x8 patch grid, 2x2-patch squares: 16 squares, 10 masked
    seen = []
    model.simmim.register_forward_hook(lambda module, args, kwargs, output: seen.append(kwargs["bool_masked_pos"]),
                                       with_kwargs=True)  # fmt: skip
    model(global_views=torch.randn(1, 3, 1, 16, 16))
    masks = seen[0].view(3, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(3, 16, 4)
    assert torch.all(masks.all(-1) | ~masks.any(-1)) and torch.all(masks.all(-1).sum(-1) == 10)


def test_masked_pixels_are_hidden_from_the_encoder_but_are_the_targets():
    model = tiny_simmim()
    images = torch.randn(1, 2, 1, 16, 16)
    masks = torch.zeros(1, 2, 64, dtype=torch.bool)
    masks[..., :32] = True  # the top half of each image
    loss = model(global_views=images, masks=masks).loss
    encoded = model.simmim(images[0], bool_masked_pos=masks[0]).last_hidden_state
    changed = images.clone()
    changed[..., :8, :] = torch.randn(1, 2, 1, 8, 16)  # new pixels in the masked half
    assert torch.equal(model.simmim(changed[0], bool_masked_pos=masks[0]).last_hidden_state, encoded)
    assert model(global_views=changed, masks=masks).loss.item() != pytest.approx(loss.item())
    # the loss is the L1 of the head's predictions against the raw pixels of the masked patches
    predictions = model.head(encoded[:, 1:])
    expected = (predictions - patchify(images[0], 2)).abs()[masks[0]].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_pretraining_lowers_the_loss_and_automodel_loads_the_encoder(tmp_path):
    model = tiny_simmim().train()
    images = torch.randn(1, 8, 1, 16, 16)
    masks = model.mask_generator(8, 8, torch.Generator().manual_seed(0)).expand(1, 8, -1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(global_views=images, masks=masks).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    model.save_pretrained(tmp_path)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(encoder, SimMIMModel)
    model.eval()
    first = encoder(images[0]).pooler_output
    assert torch.equal(first, encoder(images[0]).pooler_output)  # deterministic, no masking at inference
    assert torch.allclose(first, model.simmim(images[0]).pooler_output, atol=1e-6)
