"""The shared losses, EMA teacher and collectives, against hand-computed values and lightly's implementations."""

import math

import pytest
import torch
from lightly.loss import DINOLoss, NTXentLoss
from torch import nn

from hf_ssl.modeling.distributed import all_reduce_mean, all_reduce_sum, gather_with_grad, rank, world_size
from hf_ssl.modeling.losses import dino_batch_center, dino_loss, nt_xent_loss
from hf_ssl.modeling.teacher import cosine_schedule, ema_update_, make_teacher


def _softmax(values, temperature=1.0):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


# ---------------------------------------------------------------- NT-Xent


def test_nt_xent_hand_computed():
    # Anchors a0 = (1, 0), a1 = (0, 1) (view 1) and a2 = (.6, .8), a3 = (.8, .6) (view 2, given unnormalised).
    # Cosines: a0.a1 = 0, a0.a2 = .6, a0.a3 = .8, a1.a2 = .8, a1.a3 = .6, a2.a3 = .96. Positives: (a0, a2), (a1, a3).
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[3.0, 4.0], [4.0, 3.0]])
    tau = 0.5
    e = lambda s: math.exp(s / tau)  # noqa: E731
    terms = [
        -math.log(e(0.6) / (e(0.0) + e(0.6) + e(0.8))),  # a0: positive a2, negatives a1, a3
        -math.log(e(0.6) / (e(0.0) + e(0.8) + e(0.6))),  # a1: positive a3, negatives a0, a2
        -math.log(e(0.6) / (e(0.6) + e(0.8) + e(0.96))),  # a2: positive a0, negatives a1, a3
        -math.log(e(0.6) / (e(0.8) + e(0.6) + e(0.96))),  # a3: positive a1, negatives a0, a2
    ]
    expected = sum(terms) / 4
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_lightly_value_and_gradient(temperature):
    torch.manual_seed(0)
    z1 = torch.randn(8, 16, requires_grad=True)
    z2 = torch.randn(8, 16, requires_grad=True)
    ours = nt_xent_loss(z1, z2, temperature)
    ours_grads = torch.autograd.grad(ours, (z1, z2))
    theirs = NTXentLoss(temperature=temperature)(z1, z2)
    theirs_grads = torch.autograd.grad(theirs, (z1, z2))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for ours_grad, theirs_grad in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=1e-7)


def test_nt_xent_symmetric_in_views():
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(nt_xent_loss(z1, z2, 0.2), nt_xent_loss(z2, z1, 0.2))


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(3, 8), 0.5)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.randn(4, 8), torch.randn(4, 8), 0.0)


# ---------------------------------------------------------------- DINO


def test_dino_loss_hand_computed():
    # K = 2, B = 1; teacher sees the 2 global views, the student these and 1 local view.
    teacher = [[1.0, 0.0], [0.0, 2.0]]
    student = [[0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
    center = [0.5, -0.5]
    tau_t, tau_s = 0.5, 1.0
    p_t = [_softmax([t - c for t, c in zip(row, center)], tau_t) for row in teacher]
    log_p_s = [[math.log(p) for p in _softmax(row, tau_s)] for row in student]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]  # (teacher view, student view), never the same view
    expected = sum(-sum(p * lp for p, lp in zip(p_t[i], log_p_s[j])) for i, j in pairs) / len(pairs)

    loss = dino_loss(
        torch.tensor(student).unsqueeze(1), torch.tensor(teacher).unsqueeze(1), torch.tensor([center]), tau_s, tau_t
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("num_local", [0, 4])
def test_dino_loss_matches_lightly(num_local):
    torch.manual_seed(0)
    num_global, batch, dim = 2, 5, 32
    teacher = torch.randn(num_global, batch, dim)
    student = torch.randn(num_global + num_local, batch, dim)
    center = 0.3 * torch.randn(1, dim)
    reference = DINOLoss(output_dim=dim, teacher_temp=0.07, student_temp=0.1, warmup_teacher_temp_epochs=0)
    reference.center.copy_(center.view(1, 1, dim))  # lightly reads the centre before updating it
    expected = reference(list(teacher), list(student), teacher_temp=0.07)
    torch.testing.assert_close(dino_loss(student, teacher, center, 0.1, 0.07), expected, rtol=1e-5, atol=1e-6)


def test_dino_loss_of_identical_outputs_is_the_teacher_entropy():
    torch.manual_seed(0)
    logits = torch.randn(4, 16)
    views = logits.expand(3, 4, 16)
    loss = dino_loss(views, views[:2], torch.zeros(1, 16), 0.2, 0.2)
    entropy = torch.distributions.Categorical(logits=logits / 0.2).entropy().mean()
    torch.testing.assert_close(loss, entropy)


def test_dino_loss_gradient_reaches_only_the_student():
    student = torch.randn(3, 2, 8, requires_grad=True)
    teacher = torch.randn(2, 2, 8, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(1, 8), 0.1, 0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_dino_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="two views"):
        dino_loss(torch.randn(1, 2, 8), torch.randn(1, 2, 8), torch.zeros(1, 8), 0.1, 0.04)
    with pytest.raises(ValueError, match="every teacher view"):
        dino_loss(torch.randn(1, 2, 8), torch.randn(2, 2, 8), torch.zeros(1, 8), 0.1, 0.04)
    with pytest.raises(ValueError, match="differ"):
        dino_loss(torch.randn(3, 2, 8), torch.randn(2, 3, 8), torch.zeros(1, 8), 0.1, 0.04)


def test_dino_batch_center_matches_lightly_update():
    torch.manual_seed(0)
    teacher = torch.randn(2, 6, 10)
    reference = DINOLoss(output_dim=10, center_momentum=0.9, warmup_teacher_temp_epochs=0)
    reference.center.normal_()
    previous = reference.center.view(1, 10).clone()
    reference.update_center(teacher)
    ours = previous.lerp(dino_batch_center(teacher), 1 - 0.9)
    torch.testing.assert_close(ours, reference.center.view(1, 10))


# ---------------------------------------------------------------- EMA teacher


def test_ema_update_hand_values():
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, -2.0]]))
        teacher.bias.fill_(4.0)
        student.weight.copy_(torch.tensor([[3.0, 2.0]]))
        student.bias.fill_(0.0)
    ema_update_(teacher, student, momentum=0.75)
    # 0.75 * teacher + 0.25 * student
    torch.testing.assert_close(teacher.weight, torch.tensor([[1.5, -1.0]]))
    torch.testing.assert_close(teacher.bias, torch.tensor([3.0]))
    torch.testing.assert_close(student.weight, torch.tensor([[3.0, 2.0]]))  # the student is untouched


def test_ema_update_rejects_bad_momentum_and_mismatched_modules():
    with pytest.raises(ValueError, match="momentum"):
        ema_update_(nn.Linear(2, 1), nn.Linear(2, 1), 1.5)
    with pytest.raises(ValueError, match="structure"):
        ema_update_(nn.Linear(2, 1), nn.Linear(2, 1, bias=False), 0.9)


def test_make_teacher_is_a_frozen_independent_copy_without_stochastic_regularisation():
    from hf_ssl.backbones.modeling_vit import DropPath

    student = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), DropPath(0.3))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    torch.testing.assert_close(teacher[0].weight, student[0].weight)
    assert teacher[0].weight.data_ptr() != student[0].weight.data_ptr()
    assert teacher[1].p == 0.0 and teacher[2].drop_prob == 0.0
    assert student[1].p == 0.5 and student[2].drop_prob == 0.3
    x = torch.randn(8, 4)
    torch.testing.assert_close(teacher.train()(x), student[0](x))  # deterministic in training mode


def test_cosine_schedule_values():
    assert cosine_schedule(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine_schedule(0.996, 1.0, 50, 100) == pytest.approx(0.998)
    assert cosine_schedule(0.996, 1.0, 25, 100) == pytest.approx(1.0 - 0.004 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_schedule(0.996, 1.0, 100, 100) == pytest.approx(1.0)
    assert cosine_schedule(0.996, 1.0, 150, 100) == pytest.approx(1.0)


# ---------------------------------------------------------------- collectives on one process


def test_collectives_are_identities_without_a_process_group():
    x = torch.randn(3, 2, requires_grad=True)
    assert world_size() == 1 and rank() == 0
    assert gather_with_grad(x) is x
    torch.testing.assert_close(all_reduce_sum(x), x.detach())
    torch.testing.assert_close(all_reduce_mean(x), x.detach())
    assert not all_reduce_sum(x).requires_grad
