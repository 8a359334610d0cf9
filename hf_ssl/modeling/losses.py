"""The SSL losses, as pure functions in the papers' notation. Views are stacked view-major, (V, B, ...), the
layout of the batches (`global_views`, `local_views`)."""

import torch
import torch.nn.functional as F

from .distributed import all_reduce_sum, gather_with_grad, rank, world_size


def dino_teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temp) -> torch.Tensor:
    """DINO's targets: softmax((g_t(x) - c) / tau_t), centred and sharpened, without gradient."""
    return F.softmax((teacher_logits.detach() - center) / teacher_temp, dim=-1)


@torch.no_grad()
def dino_batch_center(teacher_logits: torch.Tensor) -> torch.Tensor:
    """The mean teacher output over every view and the global batch (all processes, equal batch sizes): the
    (1, K) statistic DINO's centre c follows, c <- m c + (1 - m) * mean."""
    rows = teacher_logits.flatten(0, -2)
    return all_reduce_sum(rows.sum(dim=0, keepdim=True)) / (rows.shape[0] * world_size())


def dino_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    center: torch.Tensor,
    student_temp: float,
    teacher_temp,
) -> torch.Tensor:
    """DINO's cross-entropy H(P_t, P_s) over every (teacher view i, student view j) pair with i != j, averaged over
    the pairs and the batch (Caron et al., 2021, eq. 3; `DINOLoss` of the original code).

    Args:
        student_logits: (V_s, B, K) head outputs of the student; its first V_t views are the teacher's views
            (the global crops, in the same order), the rest are local crops.
        teacher_logits: (V_t, B, K) head outputs of the teacher on the global crops (treated as constants).
        center: (1, K) or (K,) centre c subtracted from the teacher outputs.
        student_temp: tau_s.
        teacher_temp: tau_t (a float or a scalar tensor).
    """
    if student_logits.ndim != 3 or teacher_logits.ndim != 3:
        raise ValueError(
            f"expected (views, batch, dim) logits, got student {tuple(student_logits.shape)} and "
            f"teacher {tuple(teacher_logits.shape)}"
        )
    num_teacher, num_student = teacher_logits.shape[0], student_logits.shape[0]
    if teacher_logits.shape[1:] != student_logits.shape[1:]:
        raise ValueError(
            f"student and teacher logits differ in (batch, dim): {tuple(student_logits.shape[1:])} vs "
            f"{tuple(teacher_logits.shape[1:])}"
        )
    if num_student < num_teacher:
        raise ValueError(f"the student must see every teacher view: {num_student} < {num_teacher} views")
    num_pairs = num_teacher * num_student - num_teacher
    if num_pairs == 0:
        raise ValueError("DINO needs at least two views: with one view there is no pair i != j")

    teacher_probs = dino_teacher_probs(teacher_logits, center, teacher_temp)
    student_log_probs = F.log_softmax(student_logits / student_temp, dim=-1)
    # cross_entropy[i, j] = sum over the batch of -P_t(view i) . log P_s(view j)
    cross_entropy = -torch.einsum("tbk,sbk->ts", teacher_probs, student_log_probs)
    same_view = cross_entropy.diagonal().sum()
    return (cross_entropy.sum() - same_view) / (num_pairs * teacher_logits.shape[1])


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather_distributed: bool = True
) -> torch.Tensor:
    """SimCLR's NT-Xent (Chen et al., 2020, eq. 1), averaged over the 2N anchors.

    Each anchor z_i (both views of every image) is contrasted, by cosine similarity over `temperature`, with its
    other view (the positive) and the 2N - 2 other embeddings (the negatives). With `gather_distributed`, the
    local anchors are contrasted with the embeddings of every process (N = global batch), and the gradient flows
    back to the process that owns each embedding, so the loss averaged over processes, and its gradient, equal
    the loss on one process holding the whole batch.

    Args:
        z1, z2: (B, D) projections of the two views of the same B images (not normalised).
        temperature: tau.
        gather_distributed: take the negatives from all processes.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two (batch, dim) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    batch_size = z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2B, D): view 1 then view 2
    offset, num_images = 0, batch_size
    candidates = anchors
    if gather_distributed and world_size() > 1:
        # (W * 2B, D) in rank order -> (2 * W * B, D): every process' view 1, then every process' view 2
        gathered = gather_with_grad(anchors).view(world_size(), 2, batch_size, -1)
        candidates = gathered.transpose(0, 1).reshape(2 * world_size() * batch_size, -1)
        offset, num_images = rank() * batch_size, world_size() * batch_size

    logits = anchors @ candidates.T / temperature  # (2B, 2N)
    image = torch.arange(batch_size, device=z1.device) + offset
    own_index = torch.cat([image, image + num_images])
    positive_index = torch.cat([image + num_images, image])
    is_self = F.one_hot(own_index, 2 * num_images).bool()
    logits = logits.masked_fill(is_self, float("-inf"))
    return F.cross_entropy(logits, positive_index)
