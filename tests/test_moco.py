"""MoCo v2: the InfoNCE loss with a queue, the queue, the momentum key encoder and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from hf_ssl import MoCoConfig, MoCoForPreTraining, MoCoModel, SSLResNetConfig
from hf_ssl.modeling.losses import moco_loss
from hf_ssl.modeling.memory import FeatureQueue
from hf_ssl.training.progress import TrainingProgress

HEAD = dict(projection_hidden_dim=64, projection_dim=16, queue_size=32)


@pytest.fixture
def moco_config(tiny_vit_config):
    return MoCoConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=4, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- loss


def test_moco_loss_hand_computed():
    q = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # unit after normalisation: e1, e2
    k = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # positives: cos 1 and cos 1/sqrt(2)
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    first = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0 / t) + math.exp(-1 / t)))
    c = 1 / math.sqrt(2)
    second = -math.log(math.exp(c / t) / (math.exp(c / t) + math.exp(1 / t) + math.exp(0 / t)))
    assert moco_loss(q, k, queue, t).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_moco_loss_matches_lightly_with_a_memory_bank():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(6, 8, generator=generator), torch.randn(6, 8, generator=generator)
    queue = F.normalize(torch.randn(20, 8, generator=generator), dim=1)
    reference = NTXentLoss(temperature=0.2, memory_bank_size=(20, 8))
    reference.memory_bank.bank = queue.clone()
    torch.testing.assert_close(moco_loss(q, k, queue, 0.2), reference(q, k), rtol=1e-5, atol=1e-6)


def test_moco_loss_gradient_reaches_only_the_queries():
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=generator, requires_grad=True)
    k = torch.randn(3, 4, generator=generator, requires_grad=True)
    queue = F.normalize(torch.randn(5, 4, generator=generator), dim=1).requires_grad_(True)
    moco_loss(q, k, queue, 0.2).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_moco_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        moco_loss(torch.randn(3, 4), torch.randn(2, 4), torch.randn(5, 4), 0.2)
    with pytest.raises(ValueError, match="queue"):
        moco_loss(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 3), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        moco_loss(torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4), 0.0)


# ---------------------------------------------------------------- queue


def test_queue_starts_with_unit_vectors_and_is_a_fifo():
    torch.manual_seed(0)
    queue = FeatureQueue(5, 3)
    torch.testing.assert_close(queue.features.norm(dim=1), torch.ones(5))
    first = torch.tensor([[3.0, 0, 0], [0, 2.0, 0]])
    queue.enqueue(first)
    torch.testing.assert_close(queue.features[:2], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert queue.pointer.item() == 2
    old_tail = queue.features[4].clone()
    second = torch.eye(3) * 4  # wraps around: rows 2, 3, 4
    queue.enqueue(second)
    assert queue.pointer.item() == 0 and not torch.equal(queue.features[4], old_tail)
    torch.testing.assert_close(queue.features[2:], torch.eye(3))
    queue.enqueue(torch.tensor([[0, 0, 5.0]]))  # overwrites the oldest row, 0
    torch.testing.assert_close(queue.features[0], torch.tensor([0, 0, 1.0]))
    assert queue.pointer.item() == 1
    many = F.normalize(torch.randn(7, 3), dim=1)  # more than the queue holds: the newest 5 are kept
    queue.enqueue(many)
    torch.testing.assert_close(queue.features[[1, 2, 3, 4, 0]], many[2:])
    assert queue.pointer.item() == 1
    with pytest.raises(ValueError, match="features"):
        queue.enqueue(torch.randn(2, 4))


# ---------------------------------------------------------------- model


def test_config_defaults_and_validation(tiny_vit_config):
    config = MoCoConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.projection_num_layers) == (2048, 128, 2)
    assert (config.queue_size, config.temperature, config.momentum) == (65536, 0.2, 0.999)
    for field, value in [("queue_size", 0), ("projection_dim", 0), ("temperature", 0.0), ("momentum", 1.5)]:
        with pytest.raises(ValueError, match=field):
            MoCoConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_auto_classes_and_initial_state(tiny_vit_config):
    config = AutoConfig.for_model("moco", backbone_config=tiny_vit_config.to_dict(), **HEAD)
    model = AutoModelForPreTraining.from_config(config)
    assert type(model) is MoCoForPreTraining and isinstance(model.moco, MoCoModel)
    for online, key in zip(model.moco.parameters(), model.key_encoder.parameters()):
        assert torch.equal(online, key) and not key.requires_grad
    assert all(not p.requires_grad for p in model.key_projector.parameters())
    # MoCo v2's head: Linear-ReLU-Linear, no BatchNorm
    assert [type(m) for m in model.projector.layers] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert model.queue.features.shape == (32, 16)
    # the option small ViTs need: BatchNorm after the hidden layer, in the key projector too
    config = AutoConfig.for_model("moco", backbone_config=tiny_vit_config.to_dict(), projection_use_bn=True, **HEAD)
    model = AutoModelForPreTraining.from_config(config)
    expected = [torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU, torch.nn.Linear]
    assert [type(m) for m in model.projector.layers] == [type(m) for m in model.key_projector.layers] == expected


def test_forward_is_infonce_of_view1_queries_against_view2_keys_and_the_queue(moco_config):
    torch.manual_seed(0)
    model = MoCoForPreTraining(moco_config).train()
    views = two_views()
    out = model(global_views=views, labels=torch.zeros(4, dtype=torch.long))
    with torch.no_grad():
        q = model.projector(model.moco(views[0]).pooler_output)
        k = model.key_projector(model.key_encoder(views[1]).pooler_output)
    torch.testing.assert_close(out.loss, moco_loss(q, k, model.queue.features, 0.2))
    torch.testing.assert_close(out.embeddings, q)
    assert set(out.logs) == {"loss", "positive_cosine"}
    out.loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())
    assert model.projector.layers[0].weight.grad is not None
    with pytest.raises(ValueError, match="2, batch"):
        model(global_views=torch.randn(3, 2, 3, 32, 32))


def test_on_step_end_updates_the_key_encoder_by_ema_and_enqueues_the_keys_of_the_step(moco_config):
    torch.manual_seed(0)
    model = MoCoForPreTraining(moco_config).train()
    views = two_views()
    model(global_views=views[:, :2])
    model(global_views=views[:, 2:])  # two micro-batches of one step
    with torch.no_grad():
        keys = F.normalize(model.key_projector(model.key_encoder(views[1]).pooler_output), dim=1)
        for parameter in model.moco.parameters():
            parameter.add_(1.0)
    key_before = [p.clone() for p in model.key_encoder.parameters()]
    online = list(model.moco.parameters())
    model.on_step_end(TrainingProgress(0, 10, 5))
    for before, after, query in zip(key_before, model.key_encoder.parameters(), online):
        torch.testing.assert_close(after, 0.999 * before + 0.001 * query)
    torch.testing.assert_close(model.queue.features[:4], keys)
    assert model.queue.pointer.item() == 4
    model.eval()(global_views=views)  # no keys wait in eval mode
    model.on_step_end(TrainingProgress(1, 10, 5))
    assert model.queue.pointer.item() == 4


def test_training_steps_lower_the_loss(moco_config):
    """The queue holds the keys of 32 other images; on a fixed batch it would fill with keys of the very same images
    (negatives as close as the positive), so the steps run without `on_step_end`."""
    torch.manual_seed(0)
    model = MoCoForPreTraining(moco_config).train()
    model(global_views=two_views(batch=32, seed=1))
    model.on_step_end(TrainingProgress(0, 10, 5))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    views = two_views()
    losses = []
    for _ in range(6):
        loss = model(global_views=views).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.93 * losses[0] and losses[-1] == min(losses), losses


def test_save_load_round_trip_and_automodel_loads_the_query_encoder(moco_config, tmp_path):
    torch.manual_seed(0)
    model = MoCoForPreTraining(moco_config).train()
    model(global_views=two_views())
    model.on_step_end(TrainingProgress(0, 10, 5))
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key  # the queue and its pointer included
    assert all(not p.requires_grad for p in reloaded.key_encoder.parameters())
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is MoCoModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().moco(pixels).pooler_output)


def test_resnet_backbone():
    config = MoCoConfig(backbone_config=SSLResNetConfig(depth=18, cifar_stem=True).to_dict(), **HEAD)
    torch.manual_seed(0)
    model = MoCoForPreTraining(config).train()
    out = model(global_views=two_views(batch=3, size=16))
    assert torch.isfinite(out.loss) and out.embeddings.shape == (3, 16)
    out.loss.backward()


@pytest.mark.parametrize("recipe", ["moco_resnet50", "moco_tiny_fmnist"])
def test_recipes_give_a_valid_config_and_views(recipe):
    from hf_ssl.processing.views import build_views
    from hf_ssl.training.recipe import load_recipe

    loaded = load_recipe(recipe, [])
    config = AutoConfig.for_model(**loaded.model)
    assert config.model_type == "moco"
    assert build_views(**loaded.views)(torch.zeros(1, 28, 28, dtype=torch.uint8))["global_views"][0].ndim == 3
