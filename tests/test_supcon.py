"""SupCon: the L_out loss (hand values, equality with NT-Xent for distinct labels), the pretraining model (labels
required) and what `AutoModel` loads."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoModelForPreTraining

from hf_ssl import SupConConfig, SupConForPreTraining, SupConModel
from hf_ssl.modeling.losses import nt_xent_loss, supcon_loss

from helpers import train_losses

HEAD = dict(projection_hidden_dim=64, projection_dim=16)


@pytest.fixture
def config(tiny_vit_config):
    return SupConConfig(backbone_config=tiny_vit_config.to_dict(), **HEAD)


def two_views(batch=8, size=32, seed=0):
    return torch.randn(2, batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def l_out_by_the_formula(z, labels, tau):
    """Eq. 2 of the paper, term by term, with Python floats."""
    num_views, batch, _ = z.shape
    vectors = F.normalize(z, dim=-1).flatten(0, 1).tolist()
    classes = labels.repeat(num_views).tolist()
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    total = 0.0
    for i, anchor in enumerate(vectors):
        others = [a for a in range(len(vectors)) if a != i]
        denominator = sum(math.exp(dot(anchor, vectors[a]) / tau) for a in others)
        positives = [p for p in others if classes[p] == classes[i]]
        total += -sum(math.log(math.exp(dot(anchor, vectors[p]) / tau) / denominator) for p in positives) / len(
            positives)  # fmt: skip
    return total / len(vectors)


def test_loss_hand_computed():
    # 2 views of 3 images, classes (0, 0, 1): anchors of class 0 have 3 positives, those of class 1 one.
    z = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], [[0.8, 0.6], [1.0, 0.2], [-0.6, 0.8]]])
    labels = torch.tensor([0, 0, 1])
    expected = l_out_by_the_formula(z, labels, 0.5)
    assert supcon_loss(z, labels, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    # an anchor's positives: exactly 3 for class 0 (own other view + both views of the other image), 1 for class 1
    torch.manual_seed(0)
    z = torch.randn(2, 6, 8)
    labels = torch.tensor([3, 1, 3, 2, 1, 3])
    assert supcon_loss(z, labels, 0.1).item() == pytest.approx(l_out_by_the_formula(z, labels, 0.1), rel=1e-5)


def test_distinct_labels_give_simclr_nt_xent():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(supcon_loss(torch.stack([z1, z2]), torch.arange(6), 0.2), nt_xent_loss(z1, z2, 0.2))


def test_more_same_class_neighbours_lower_the_loss():
    # the views of two images of one class, aligned, against a third class: merging the class lowers L_out
    z = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], [[1.0, 0.05], [0.95, 0.0], [0.05, 1.0]]])
    assert supcon_loss(z, torch.tensor([0, 0, 1]), 0.1) < supcon_loss(z, torch.tensor([0, 1, 2]), 0.1)


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(torch.randn(2, 4, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        supcon_loss(torch.randn(2, 4, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(torch.randn(2, 4, 8), torch.zeros(4, dtype=torch.long), temperature=0.0)


def test_config_defaults_and_validation(tiny_vit_config):
    config = SupConConfig()
    assert (config.projection_hidden_dim, config.projection_dim, config.temperature) == (2048, 128, 0.1)
    for field, value in [("projection_dim", 0), ("temperature", 0.0)]:
        with pytest.raises(ValueError, match=field):
            SupConConfig(backbone_config=tiny_vit_config.to_dict(), **{field: value})


def test_forward_needs_labels_and_trains(config):
    torch.manual_seed(0)
    model = SupConForPreTraining(config).train()
    views = two_views()
    with pytest.raises(ValueError, match="labels"):
        model(global_views=views)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    out = model(global_views=views, labels=labels)
    with torch.no_grad():
        z = model.projector(model.supcon(views.flatten(0, 1)).pooler_output).unflatten(0, (2, 8))
    torch.testing.assert_close(out.loss, supcon_loss(z, labels, 0.1))
    losses = train_losses(model, {"global_views": views, "labels": labels}, 6, hooks=False)
    assert losses[-1] < 0.8 * losses[0], losses


def test_automodel_loads_the_encoder(config, tmp_path):
    torch.manual_seed(0)
    model = SupConForPreTraining(config)
    model.save_pretrained(tmp_path)
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is SupConForPreTraining
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is SupConModel
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels).pooler_output, model.eval().supcon(pixels).pooler_output)
