"""Parameter groups (weight-decay exclusion, layer-wise LR decay, patch-embed multiplier) and LARS."""

import math

import pytest
import torch
from torch import nn

from hf_ssl.backbones import SSLViTConfig, SSLViTModel
from hf_ssl.training.optim import LARS, build_optimizer, param_groups


class _ViTWithHead(nn.Module):
    def __init__(self):
        super().__init__()
        config = SSLViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              layerscale_value=1e-5)  # fmt: skip
        self.backbone = SSLViTModel(config)
        self.head = nn.Sequential(nn.Linear(32, 8), nn.LayerNorm(8))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def _group_of(groups, model):
    """parameter name -> (lr_scale, apply_wd)."""
    by_id = {id(p): (g["lr_scale"], g["apply_wd"]) for g in groups for p in g["params"]}
    return {name: by_id.get(id(p)) for name, p in model.named_parameters()}


def test_biases_and_1d_parameters_get_no_weight_decay_and_frozen_ones_are_left_out():
    model = _ViTWithHead()
    groups = _group_of(param_groups(model), model)
    assert groups["head.0.weight"] == (1.0, True)
    assert groups["head.0.bias"] == (1.0, False)
    assert groups["head.1.weight"] == (1.0, False)  # LayerNorm weight: 1-D
    assert groups["backbone.layers.0.ls1.gamma"] == (1.0, False)  # LayerScale: 1-D
    assert groups["backbone.layers.1.attn.qkv.weight"] == (1.0, True)
    assert groups["backbone.embeddings.cls_token"] == (1.0, True)  # (1, 1, D), decayed as in DINO
    assert groups["frozen.weight"] is None and groups["frozen.bias"] is None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert sum(p.numel() for g in param_groups(model) for p in g["params"]) == trainable


def test_layer_decay_scales_of_a_two_layer_vit_and_patch_embed_multiplier():
    model = _ViTWithHead()
    groups = _group_of(param_groups(model, layer_decay=0.5, patch_embed_lr_mult=0.2), model)
    # L = 2: embeddings -> id 0 -> 0.5**3, layers.0 -> id 1 -> 0.5**2, layers.1 -> 0.5, final norm / head -> 1
    assert groups["backbone.embeddings.cls_token"] == (0.125, True)
    assert groups["backbone.embeddings.position_embeddings"] == (0.125, True)
    assert groups["backbone.embeddings.patch_embeddings.projection.weight"] == (0.125 * 0.2, True)
    assert groups["backbone.embeddings.patch_embeddings.projection.bias"] == (0.125 * 0.2, False)
    assert groups["backbone.layers.0.attn.qkv.weight"] == (0.25, True)
    assert groups["backbone.layers.0.norm1.weight"] == (0.25, False)
    assert groups["backbone.layers.1.mlp.fc2.weight"] == (0.5, True)
    assert groups["backbone.layernorm.weight"] == (1.0, False)
    assert groups["head.0.weight"] == (1.0, True)


def test_build_optimizer_sets_group_lr_and_weight_decay():
    model = _ViTWithHead()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    assert isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"])
        assert group["weight_decay"] == (0.05 if group["apply_wd"] else 0.0)
    lars = build_optimizer(model, "lars", lr=0.1, weight_decay=1e-6)
    assert all(g["lars_adaptation"] == g["apply_wd"] for g in lars.param_groups)
    with pytest.raises(ValueError, match="optim.optimizer"):
        build_optimizer(model, "adam", lr=1e-3)


def test_lars_two_steps_match_the_hand_computed_update():
    weight = nn.Parameter(torch.tensor([3.0, 4.0]))  # norm 5
    bias = nn.Parameter(torch.tensor([1.0]))
    optimizer = LARS(
        [{"params": [weight], "weight_decay": 0.1}, {"params": [bias], "weight_decay": 0.0, "lars_adaptation": False}],
        lr=2.0, momentum=0.9, trust_coefficient=0.001,
    )  # fmt: skip
    grad, bias_grad = [0.6, 0.8], 0.5
    w, velocity, b, bias_velocity = [3.0, 4.0], [0.0, 0.0], 1.0, 0.0
    for _ in range(2):
        weight.grad = torch.tensor(grad)
        bias.grad = torch.tensor([bias_grad])
        optimizer.step()
        update = [g + 0.1 * x for g, x in zip(grad, w)]
        trust = 0.001 * math.hypot(*w) / math.hypot(*update)
        velocity = [0.9 * v + trust * u for v, u in zip(velocity, update)]
        w = [x - 2.0 * v for x, v in zip(w, velocity)]
        bias_velocity = 0.9 * bias_velocity + bias_grad
        b = b - 2.0 * bias_velocity
    # first step: update (0.9, 1.2), trust 0.001 * 5 / 1.5, so w = (3, 4) - 2 * (0.003, 0.004)
    torch.testing.assert_close(weight.detach(), torch.tensor(w, dtype=torch.float32))
    torch.testing.assert_close(bias.detach(), torch.tensor([b]))


def test_lars_without_adaptation_and_decay_is_sgd_with_momentum():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    lars = LARS(a.parameters(), lr=0.1, momentum=0.9, lars_adaptation=False)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x = torch.randn(5, 4)
        for model, optimizer in ((a, lars), (b, sgd)):
            optimizer.zero_grad()
            model(x).square().sum().backward()
            optimizer.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_lars_zero_weight_uses_trust_ratio_one():
    weight = nn.Parameter(torch.zeros(2))
    optimizer = LARS([weight], lr=1.0, momentum=0.0)
    weight.grad = torch.tensor([1.0, -2.0])
    optimizer.step()
    torch.testing.assert_close(weight.detach(), torch.tensor([-1.0, 2.0]))
