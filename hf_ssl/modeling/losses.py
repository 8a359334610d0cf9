"""The SSL losses, as pure functions in the papers' notation. Views are stacked view-major, (V, B, ...), the
layout of the batches (`global_views`, `local_views`)."""

import math

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

from .distributed import (
    all_reduce_sum,
    all_reduce_with_grad,
    gather_no_grad,
    gather_with_grad,
    is_distributed,
    rank,
    world_size,
)


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
    if teacher_logits.ndim != 3:
        raise ValueError(
            f"expected (views, batch, dim) logits, got student {tuple(student_logits.shape)} and "
            f"teacher {tuple(teacher_logits.shape)}"
        )
    return dino_cross_entropy(student_logits, dino_teacher_probs(teacher_logits, center, teacher_temp), student_temp)


def dino_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor, student_temp: float) -> torch.Tensor:
    """DINO's multi-crop cross-entropy given the teacher's targets P_t (DINO's centred softmax, or DINOv2's
    Sinkhorn-Knopp assignments): H(P_t, P_s) over every (teacher view i, student view j) pair with i != j, averaged
    over the pairs and the batch.

    Args:
        student_logits: (V_s, B, K) student head outputs; its first V_t views are the teacher's views.
        teacher_probs: (V_t, B, K) teacher targets on the global crops (constants).
        student_temp: tau_s.
    """
    if student_logits.ndim != 3 or teacher_probs.ndim != 3:
        raise ValueError(
            f"expected (views, batch, dim) logits, got student {tuple(student_logits.shape)} and "
            f"teacher {tuple(teacher_probs.shape)}"
        )
    num_teacher, num_student = teacher_probs.shape[0], student_logits.shape[0]
    if teacher_probs.shape[1:] != student_logits.shape[1:]:
        raise ValueError(
            f"student and teacher logits differ in (batch, dim): {tuple(student_logits.shape[1:])} vs "
            f"{tuple(teacher_probs.shape[1:])}"
        )
    if num_student < num_teacher:
        raise ValueError(f"the student must see every teacher view: {num_student} < {num_teacher} views")
    num_pairs = num_teacher * num_student - num_teacher
    if num_pairs == 0:
        raise ValueError("DINO needs at least two views: with one view there is no pair i != j")

    student_log_probs = F.log_softmax(student_logits / student_temp, dim=-1)
    # cross_entropy[i, j] = sum over the batch of -P_t(view i) . log P_s(view j)
    cross_entropy = -torch.einsum("tbk,sbk->ts", teacher_probs.detach().to(student_log_probs.dtype), student_log_probs)
    same_view = cross_entropy.diagonal().sum()
    return (cross_entropy.sum() - same_view) / (num_pairs * teacher_probs.shape[1])


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


def moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's InfoNCE (He et al., 2020, eq. 1): -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_j exp(q.k_j/tau)),
    averaged over the batch.

    Each query's positive k+ is the key of its own image; the negatives k_j are the K keys of the queue (not the other
    keys of the batch). Queries and keys are compared by cosine similarity; the keys are constants.

    Args:
        q: (B, D) queries (not normalised).
        k: (B, D) keys of the other view of the same images (not normalised; no gradient flows into them).
        queue: (K, D) unit-norm keys of earlier batches.
        temperature: tau (0.07 for MoCo v1, 0.2 for MoCo v2).
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"expected two (batch, dim) tensors of one shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be (K, {q.shape[1]}), got {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = F.normalize(q, dim=-1)
    k = F.normalize(k.detach(), dim=-1)
    positive = (q * k).sum(dim=-1, keepdim=True)  # (B, 1)
    negatives = q @ queue.detach().to(q.dtype).T  # (B, K)
    logits = torch.cat([positive, negatives], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def info_nce_loss(
    queries: torch.Tensor, keys: torch.Tensor, temperature: float, gather_distributed: bool = True
) -> torch.Tensor:
    """InfoNCE with in-batch negatives, in one direction: each query q_i is contrasted, by cosine similarity over
    `temperature`, with the keys of every image of the (global) batch; its positive is k_i, the key of its own image.
    Averaged over the local queries.

    MoCo v3's ctr(q, k) (Chen, Xie and He, 2021, Algorithm 1, before its 2 tau scaling) and NNCLR's loss (Dwibedi et
    al., 2021, eq. 2, with q = NN(z, Q) and k = the prediction of the other view) are this function.

    With `gather_distributed`, the keys of every process are gathered with their gradient (NNCLR's predictions need
    it; MoCo v3's keys have none) and query i of process r is paired with key r * B + i, so the mean of the
    per-process losses equals the loss of one process holding the whole batch.

    Args:
        queries: (B, D) anchors (not normalised).
        keys: (B, D) positives of the same images, in the same order (not normalised).
        temperature: tau.
        gather_distributed: take the negatives from all processes.
    """
    if queries.ndim != 2 or queries.shape != keys.shape:
        raise ValueError(
            f"expected two (batch, dim) tensors of one shape, got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    queries = F.normalize(queries, dim=-1)
    keys = F.normalize(keys, dim=-1)
    offset = 0
    if gather_distributed and world_size() > 1:
        keys = gather_with_grad(keys)
        offset = rank() * queries.shape[0]
    logits = queries @ keys.T / temperature  # (B, N)
    labels = torch.arange(queries.shape[0], device=queries.device) + offset
    return F.cross_entropy(logits, labels)


def mocov3_loss(
    q1: torch.Tensor,
    q2: torch.Tensor,
    k1: torch.Tensor,
    k2: torch.Tensor,
    temperature: float,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """MoCo v3's symmetrized contrastive loss ctr(q1, k2) + ctr(q2, k1), each term scaled by 2 tau as the original
    code (which makes the gradient scale independent of tau). Keys are the momentum encoder's (constants).

    Args:
        q1, q2: (B, D) predictor outputs of the query encoder on view 1 and view 2.
        k1, k2: (B, D) projector outputs of the momentum encoder on view 1 and view 2.
        temperature: tau (0.2 for ViT, 1.0 for ResNet-50 in the original recipes).
        gather_distributed: contrast with the keys of every process (the original's `concat_all_gather`).
    """
    k1, k2 = k1.detach(), k2.detach()
    return 2 * temperature * (
        info_nce_loss(q1, k2, temperature, gather_distributed) + info_nce_loss(q2, k1, temperature, gather_distributed)
    )


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrized loss (Grill et al., 2020, eq. 2): L = ||q̄1 - z̄'2||² + ||q̄2 - z̄'1||², where
    ||q̄ - z̄'||² = 2 - 2 cos(q, z') for l2-normalised vectors, each term averaged over the batch (so L is in [0, 8]).

    Args:
        p1, p2: (B, D) online predictions q_theta(z_theta) of view 1 and view 2.
        z1, z2: (B, D) target projections z'_xi of view 1 and view 2 (constants: no gradient flows into them).
    """
    return normalized_mse(p1, z2) + normalized_mse(p2, z1)


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||p/||p|| - sg(z)/||z||||² = 2 - 2 cos(p, z), averaged over the batch (BYOL's regression loss)."""
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"expected two (batch, dim) tensors of one shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def negative_cosine_similarity(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, stopgrad(z)) = -(p/||p||).(z/||z||), averaged over the batch: the gradient reaches p only."""
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"expected two (batch, dim) tensors of one shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetrized loss (Chen and He, 2021, eq. 4): L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2, in [-1, 1].

    Args:
        p1, p2: (B, D) predictor outputs h(f(x1)), h(f(x2)).
        z1, z2: (B, D) projector outputs f(x1), f(x2) (the stop-gradient is applied here).
    """
    return 0.5 * negative_cosine_similarity(p1, z2) + 0.5 * negative_cosine_similarity(p2, z1)


def nnclr_loss(
    nn1: torch.Tensor,
    nn2: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    temperature: float,
    gather_distributed: bool = True,
) -> torch.Tensor:
    """NNCLR's loss (Dwibedi et al., 2021, eq. 2), symmetrized over the views:
    (InfoNCE(NN(z1, Q), p2) + InfoNCE(NN(z2, Q), p1)) / 2, where the nearest neighbours NN(z, Q) from the support
    set are the anchors (constants) and the predictions of the other view the positives and negatives (global batch).

    Args:
        nn1, nn2: (B, D) nearest neighbours in the support set Q of the projections z1, z2.
        p1, p2: (B, D) predictions of view 1 and view 2.
        temperature: tau (0.1).
        gather_distributed: take the negatives from all processes.
    """
    nn1, nn2 = nn1.detach(), nn2.detach()
    return 0.5 * (
        info_nce_loss(nn1, p2, temperature, gather_distributed) + info_nce_loss(nn2, p1, temperature, gather_distributed)
    )


# ---------------------------------------------------------------- masked / predictive family (iBOT, DINOv2, MSN,
# I-JEPA, data2vec, distillation)


@torch.no_grad()
def sinkhorn_knopp_teacher_probs(teacher_logits: torch.Tensor, teacher_temp, num_iterations: int = 3) -> torch.Tensor:
    """DINOv2's teacher targets with Sinkhorn-Knopp centering (`sinkhorn_knopp_teacher`): `sinkhorn_knopp` from
    exp(g_t(x) / tau_t) over the rows (B, K) of every process (whose numbers may differ, as DINOv2's masked patches),
    replacing DINO's centred softmax. The global maximum logit is subtracted first, which cancels in the first
    normalisation and keeps exp finite at tau_t = 0.04."""
    logits = teacher_logits.detach().float()
    global_max = logits.max() if logits.numel() else logits.new_zeros(())
    if is_distributed():
        dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    return sinkhorn_knopp(logits - global_max, epsilon=float(teacher_temp), iterations=num_iterations)


@torch.no_grad()
def mean_over_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (1, K) mean of (M, K) rows over every process, whatever number each holds (iBOT's patch centre over the
    masked patches), and that global number of rows as a 0-dim tensor (the mean is 0 when it is 0)."""
    rows = rows.detach().float().flatten(0, -2)
    total = all_reduce_sum(torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])]))
    return (total[:-1] / total[-1].clamp(min=1.0)).unsqueeze(0), total[-1]


def ibot_patch_loss(
    student_patch_logits: torch.Tensor, teacher_patch_probs: torch.Tensor, masks: torch.Tensor, student_temp: float
) -> torch.Tensor:
    """iBOT's masked-image-modeling loss L_MIM (Zhou et al., 2022, eq. 2; DINOv2's `forward_masked`): on every masked
    patch, the cross-entropy H(P_t, P_s) between the teacher's target on the unmasked view and the student's output
    on the masked view; averaged over the masked patches of each image, then over the images (an image without
    masked patches contributes 0 and still counts).

    Args:
        student_patch_logits: (M, K) student head outputs of the masked patches, in the order of `masks.nonzero()`.
        teacher_patch_probs: (M, K) teacher targets of the same patches (centred/sharpened softmax or Sinkhorn-Knopp).
        masks: (I, N) bool, True = masked, for the I = views x batch images.
        student_temp: tau_s.
    """
    if masks.ndim != 2 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be a (images, patches) bool tensor, got {masks.dtype} {tuple(masks.shape)}")
    if student_patch_logits.ndim != 2 or student_patch_logits.shape != teacher_patch_probs.shape:
        raise ValueError(
            f"expected (masked patches, K) student logits and teacher targets of one shape, got "
            f"{tuple(student_patch_logits.shape)} and {tuple(teacher_patch_probs.shape)}"
        )
    cross_entropy = -(teacher_patch_probs.detach() * F.log_softmax(student_patch_logits / student_temp, dim=-1)).sum(-1)
    weights = (1.0 / masks.sum(dim=-1, keepdim=True).clamp(min=1)).expand_as(masks)[masks]
    return (cross_entropy * weights).sum() / masks.shape[0]


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The KoLeo regulariser (Sablayrolles et al., 2019; DINOv2): -1/n sum_i log(d_i + eps), d_i the distance of
    the l2-normalised x_i to its nearest neighbour among the other rows; it spreads the batch over the sphere.
    Computed on the local batch only, as DINOv2 does (no cross-process neighbours).

    Args:
        x: (n, D) features, n >= 2 (DINOv2: the student's CLS tokens of one global crop).
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"KoLeo needs (n >= 2, dim) features, got shape {tuple(x.shape)}")
    x = F.normalize(x, dim=-1, eps=eps)
    with torch.no_grad():
        similarity = x @ x.T
        similarity.fill_diagonal_(-2.0)
        neighbour = similarity.argmax(dim=1)
    distances = F.pairwise_distance(x, x[neighbour], eps=eps)
    return -torch.log(distances + eps).mean()


def msn_loss(
    anchor_logits: torch.Tensor,
    target_logits: torch.Tensor,
    anchor_temp: float = 0.1,
    target_temp: float = 0.025,
    me_max_weight: float = 1.0,
    sinkhorn_iterations: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSN's loss (Assran et al., 2022, eq. 1): (1 / MB) sum H(p+, p) + lambda (log K - H(p_bar)), the cross-entropy
    of the anchors' predictions to the targets plus the mean-entropy-maximisation (me-max) regulariser.

    p = softmax(cos(z, prototypes) / anchor_temp) for each of the M anchor views, p+ = the target's sharpened
    distribution softmax(cos(z+, prototypes) / target_temp) (MSN's 0.1 temperature sharpened by T = 0.25), made
    equipartitioned by `sinkhorn_iterations` Sinkhorn-Knopp steps over the global batch when > 0 (the original's
    `use_sinkhorn`). p_bar, the mean anchor prediction, is averaged over every process (its AllReduce).

    Args:
        anchor_logits: (M, B, K) cosine similarities of the anchor views' embeddings with the prototypes.
        target_logits: (B, K) cosine similarities of the target view's embeddings (constants).
    Returns:
        (total loss, cross-entropy term, me-max regulariser).
    """
    if anchor_logits.ndim != 3 or target_logits.ndim != 2 or anchor_logits.shape[1:] != target_logits.shape:
        raise ValueError(
            f"expected (views, batch, K) anchor and (batch, K) target logits, got {tuple(anchor_logits.shape)} "
            f"and {tuple(target_logits.shape)}"
        )
    with torch.no_grad():
        targets = F.softmax(target_logits.detach().float() / target_temp, dim=-1)
        if sinkhorn_iterations > 0:  # on the sharpened probabilities, as the original: exp(log p / 1) = p
            targets = sinkhorn_knopp(targets.log(), epsilon=1.0, iterations=sinkhorn_iterations)
    anchor_probs = F.softmax(anchor_logits / anchor_temp, dim=-1)
    cross_entropy = -(targets * F.log_softmax(anchor_logits / anchor_temp, dim=-1)).sum(-1).mean()
    mean_probs = anchor_probs.flatten(0, 1).mean(dim=0)
    if is_distributed():  # the original's AllReduce (a mean with gradient)
        mean_probs = torch.stack(dist_fn.all_gather(mean_probs)).mean(dim=0)
    regulariser = math.log(mean_probs.shape[0]) - torch.special.entr(mean_probs).sum()
    return cross_entropy + me_max_weight * regulariser, cross_entropy, regulariser


def ijepa_loss(predictions: torch.Tensor, targets: torch.Tensor, loss_type: str = "smooth_l1") -> torch.Tensor:
    """I-JEPA's loss (Assran et al., 2023, eq. 1): the distance between the predicted and the target encoder's
    representations of the target-block patches, averaged over blocks, patches and channels (the original's
    `F.smooth_l1_loss(z, h)`; `"mse"` for the L2 variant). `targets` are layer-normed target-encoder outputs
    (constants)."""
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} differ in shape")
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(predictions, targets.detach())
    if loss_type == "mse":
        return F.mse_loss(predictions, targets.detach())
    raise ValueError(f"loss_type must be 'smooth_l1' or 'mse', got {loss_type!r}")


def data2vec_loss(
    predictions: torch.Tensor, targets: torch.Tensor, beta: float = 2.0, scale: float | None = None
) -> torch.Tensor:
    """data2vec's regression loss (Baevski et al., 2022, eq. 2) on the masked patches: smooth-L1 with threshold
    beta (L2 when beta = 0), summed over the D channels, scaled by `scale` (default 1/sqrt(D), as the original) and
    averaged over the patches.

    Args:
        predictions: (M, D) student predictions of the masked patches.
        targets: (M, D) the teacher's averaged, normalised top-K layer outputs at those patches (constants).
    """
    if predictions.ndim != 2 or predictions.shape != targets.shape:
        raise ValueError(f"expected two (patches, dim) tensors of one shape, got {tuple(predictions.shape)} "
                         f"and {tuple(targets.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    targets = targets.detach().to(predictions.dtype)
    if beta == 0:
        per_patch = F.mse_loss(predictions, targets, reduction="none").sum(-1)
    else:
        per_patch = F.smooth_l1_loss(predictions, targets, reduction="none", beta=beta).sum(-1)
    scale = predictions.shape[-1] ** -0.5 if scale is None else scale
    return (per_patch * scale).mean()


def hinton_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0):
    """Knowledge distillation (Hinton et al., 2015): T^2 KL(softmax(z_t / T) || softmax(z_s / T)), averaged over the
    batch. The T^2 factor keeps the gradient scale independent of T; add the usual cross-entropy on labels
    separately when there are labels.

    Args:
        student_logits, teacher_logits: (B, C) class logits (the teacher's are constants).
        temperature: T (> 0).
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"expected two (batch, classes) tensors of one shape, got {tuple(student_logits.shape)} "
                         f"and {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    teacher_log_probs = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True)
    return kl * temperature**2


# ---------------------------------------------------------------- clustering: SwAV, DeepCluster v2


@torch.no_grad()
def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3, gather_distributed: bool = True
) -> torch.Tensor:
    """SwAV's codes: the soft assignment Q of B samples to K prototypes maximising Tr(Q^T C^T Z) + eps H(Q) on the
    transportation polytope (Caron et al., 2020, eq. 3), by `iterations` Sinkhorn-Knopp steps from exp(scores / eps).

    Each step gives every prototype a total weight 1/K, then every sample 1/B; the output is scaled by B, so every
    sample's code sums to 1 and every prototype receives about B/K (exactly in the limit). With `gather_distributed`,
    B is the global batch: the sums over samples are all-reduced, as the original `distributed_sinkhorn`, and each
    process gets the codes of its own samples. No gradient.

    Args:
        scores: (B, K) cosine similarities z^T c_k of the local samples (and any queue) with the prototypes.
        epsilon: eps, the entropy weight (0.05).
        iterations: Sinkhorn-Knopp steps (3).
        gather_distributed: normalise over the samples of every process.
    """
    if scores.ndim != 2:
        raise ValueError(f"expected (samples, prototypes) scores, got {tuple(scores.shape)}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"epsilon must be > 0 and iterations >= 1, got {epsilon} and {iterations}")
    reduce = all_reduce_sum if gather_distributed else (lambda tensor: tensor)
    codes = torch.exp(scores.float() / epsilon).T  # (K, B), the paper's layout
    num_prototypes = codes.shape[0]
    num_samples = reduce(torch.tensor(float(codes.shape[1]), device=codes.device))  # processes may differ (DINOv2)
    codes /= reduce(codes.sum())
    for _ in range(iterations):
        codes /= reduce(codes.sum(dim=1, keepdim=True)) * num_prototypes  # each prototype: 1/K
        codes /= codes.sum(dim=0, keepdim=True) * num_samples  # each sample: 1/B
    return (codes * num_samples).T


def swav_loss(scores: torch.Tensor, codes: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SwAV's swapped prediction over multi-crop (Caron et al., 2020, eq. 1 and section 3.2): the code q_a of each
    assigning crop a is predicted from every other crop v by the cross-entropy -sum_k q_a^(k) log p_v^(k), with
    p_v = softmax(z_v^T C / tau); averaged over the batch, the V - 1 predicting crops and the assigning crops.

    Args:
        scores: (V, B, K) prototype scores z^T C of every crop, the assigning crops first.
        codes: (V_a, B, K) codes q of the first V_a crops (constants, from `sinkhorn_knopp`).
        temperature: tau (0.1).
    """
    if scores.ndim != 3 or codes.ndim != 3 or codes.shape[1:] != scores.shape[1:]:
        raise ValueError(f"expected scores (V, B, K) and codes (V_a, B, K), got {tuple(scores.shape)} and "
                         f"{tuple(codes.shape)}")  # fmt: skip
    num_crops, num_assigned = scores.shape[0], codes.shape[0]
    if num_crops < 2 or not 1 <= num_assigned <= num_crops:
        raise ValueError(f"need >= 2 crops and 1..{num_crops} assigning crops, got {num_crops} and {num_assigned}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_probs = F.log_softmax(scores / temperature, dim=-1)
    # cross_entropy[a, v]: mean over the batch of -q_a . log p_v
    cross_entropy = -torch.einsum("abk,vbk->av", codes.detach().to(log_probs.dtype), log_probs) / scores.shape[1]
    same_crop = cross_entropy.diagonal().sum()
    return (cross_entropy.sum() - same_crop) / (num_assigned * (num_crops - 1))


def deepcluster_loss(scores: list[torch.Tensor], targets: list[torch.Tensor], temperature: float = 0.1) -> torch.Tensor:
    """DeepCluster v2's loss: for every set of prototypes h (one per k-means clustering), the cross-entropy of
    softmax(z^T C_h / tau) of every crop against the cluster of its image, averaged over crops, batch and sets.

    Args:
        scores: per set h, (V, B, K_h) prototype scores of every crop.
        targets: per set h, (B,) cluster index of every image (-100: no target, ignored).
        temperature: tau (0.1).
    """
    if not scores or len(scores) != len(targets):
        raise ValueError(f"need one target per set of scores, got {len(scores)} and {len(targets)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    losses = []
    for head_scores, head_targets in zip(scores, targets):
        if head_scores.ndim != 3 or head_targets.shape != head_scores.shape[1:2]:
            raise ValueError(f"expected scores (V, B, K) and targets (B,), got {tuple(head_scores.shape)} and "
                             f"{tuple(head_targets.shape)}")  # fmt: skip
        num_crops = head_scores.shape[0]
        losses.append(
            F.cross_entropy(head_scores.flatten(0, 1) / temperature, head_targets.repeat(num_crops), ignore_index=-100)
        )
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- redundancy reduction: Barlow Twins, VICReg, W-MSE


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The n (n - 1) off-diagonal entries of a square (n, n) matrix, flattened (a view)."""
    n = matrix.shape[0]
    return matrix.flatten()[:-1].view(n - 1, n + 1)[:, 1:]


def barlow_twins_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5, gather_distributed: bool = True
) -> torch.Tensor:
    """Barlow Twins (Zbontar et al., 2021, eq. 1): sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2, with C the
    cross-correlation matrix of the two views' embeddings, each standardised along the batch (BatchNorm without
    affine parameters, biased variance, `eps`), C = z_a_norm^T z_b_norm / N.

    With `gather_distributed`, N is the global batch: the BatchNorm statistics and C are sums all-reduced over
    processes with their gradient (the original's SyncBatchNorm + `all_reduce(c)`), so every process computes the
    loss of the whole batch.

    Args:
        z_a, z_b: (B, D) projector outputs of the two views.
        lambd: lambda, the weight of the redundancy-reduction term (0.0051 = 5.1e-3).
        eps: BatchNorm's epsilon.
        gather_distributed: statistics over every process' batch.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected two (batch, dim) tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    reduce = all_reduce_with_grad if gather_distributed else (lambda tensor: tensor)
    num_samples = z_a.shape[0] * (world_size() if gather_distributed else 1)
    if num_samples < 2:
        raise ValueError("Barlow Twins needs a batch of at least 2 samples to standardise the embeddings")

    def standardise(z: torch.Tensor) -> torch.Tensor:
        centered = z - reduce(z.sum(dim=0)) / num_samples
        variance = reduce(centered.pow(2).sum(dim=0)) / num_samples
        return centered / torch.sqrt(variance + eps)

    c = reduce(standardise(z_a).T @ standardise(z_b)) / num_samples
    on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
    off_diagonal = _off_diagonal(c).pow(2).sum()
    return on_diagonal + lambd * off_diagonal


def vicreg_variance(z: torch.Tensor, gamma: float = 1.0, eps: float = 1e-4) -> torch.Tensor:
    """VICReg's variance term v(Z) = mean_j max(0, gamma - sqrt(Var(z^j) + eps)) over the D dimensions (unbiased
    variance along the batch): a hinge on every dimension's standard deviation."""
    return F.relu(gamma - torch.sqrt(z.var(dim=0) + eps)).mean()


def vicreg_covariance(z: torch.Tensor) -> torch.Tensor:
    """VICReg's covariance term c(Z) = sum_{i != j} C(Z)_ij^2 / D, C(Z) the (unbiased) covariance matrix."""
    centered = z - z.mean(dim=0)
    covariance = centered.T @ centered / (z.shape[0] - 1)
    return _off_diagonal(covariance).pow(2).sum() / z.shape[1]


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
    gather_distributed: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """VICReg (Bardes, Ponce and LeCun, 2022, eq. 6) as the original code computes it:
    lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')], with s the mean squared error over every entry.

    The invariance term compares each process' own pairs; with `gather_distributed` the variance and covariance terms
    use the embeddings of every process, gathered with their gradient (the original's `FullGatherLayer`), so the mean
    of the per-process losses equals the loss of one process holding the whole batch.

    Args:
        z_a, z_b: (B, D) expander outputs of the two views.
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1).
        gamma: the target standard deviation (1).
        eps: added to the variance before the square root.
        gather_distributed: variance and covariance over the global batch.

    Returns:
        The loss and its unweighted terms `invariance`, `variance`, `covariance` (detached).
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            f"expected two (batch, dim) tensors of one shape, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    invariance = F.mse_loss(z_a, z_b)
    if gather_distributed:
        z_a, z_b = gather_with_grad(z_a), gather_with_grad(z_b)
    if z_a.shape[0] < 2:
        raise ValueError("VICReg needs a batch of at least 2 samples for the variance and covariance terms")
    variance = (vicreg_variance(z_a, gamma, eps) + vicreg_variance(z_b, gamma, eps)) / 2
    covariance = vicreg_covariance(z_a) + vicreg_covariance(z_b)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    terms = {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}
    return loss, terms


def cholesky_whiten(x: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """W-MSE's whitening (Ermolov et al., 2021, eq. 4): z = W (x - mu) with W = L^{-1}, L L^T = Cholesky of the
    (unbiased) covariance, shrunk towards the identity by `eps`; the output has zero mean and identity covariance.

    Args:
        x: (..., N, D) batches of N embeddings (N > D), whitened independently, in float32.
        eps: shrinkage (1 - eps) Sigma + eps I (0).
    """
    if x.ndim < 2 or x.shape[-2] <= x.shape[-1]:
        raise ValueError(f"whitening needs more samples than dimensions, got (..., N, D) = {tuple(x.shape)}")
    x = x.float()
    centered = x - x.mean(dim=-2, keepdim=True)
    covariance = centered.transpose(-2, -1) @ centered / (x.shape[-2] - 1)
    identity = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    lower = torch.linalg.cholesky((1 - eps) * covariance + eps * identity)
    return torch.linalg.solve_triangular(lower, centered.transpose(-2, -1), upper=False).transpose(-2, -1)


def wmse_loss(
    z: torch.Tensor,
    whitening_size: int = 128,
    whitening_iterations: int = 1,
    eps: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """W-MSE (Ermolov et al., 2021, eq. 3): the images are split at random into sub-batches of `whitening_size`, each
    view of each sub-batch is whitened on its own (`cholesky_whiten`), and the MSE between the whitened embeddings of
    every pair of views is averaged over pairs, images and `whitening_iterations` random splits. With `normalize`
    (the paper's default), the whitened vectors are L2-normalised first: MSE = 2 - 2 cos.

    Sub-batches are local to the process, as the original (its whitening needs only `whitening_size` samples).

    Args:
        z: (V, B, D) projections of V >= 2 views of B images; B a multiple of `whitening_size` > D.
        whitening_size: images per whitening sub-batch (128; 256 for 128-d embeddings).
        whitening_iterations: random splits averaged (1).
        eps: shrinkage of the covariance (0).
        normalize: compare unit-norm whitened vectors.
        generator: draws the splits (`torch.randperm(B)` on the CPU, the global RNG by default).
    """
    if z.ndim != 3 or z.shape[0] < 2:
        raise ValueError(f"expected projections (views >= 2, batch, dim), got {tuple(z.shape)}")
    num_views, batch_size, dim = z.shape
    if whitening_size <= dim or batch_size % whitening_size:
        raise ValueError(
            f"whitening_size must exceed the embedding dim {dim} and divide the batch {batch_size}, "
            f"got {whitening_size}"
        )
    if whitening_iterations < 1:
        raise ValueError(f"whitening_iterations must be >= 1, got {whitening_iterations}")
    pairs = [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
    total = z.new_zeros((), dtype=torch.float32)
    for _ in range(whitening_iterations):
        order = torch.randperm(batch_size, generator=generator).to(z.device)
        # (V, B / w, w, D): every view of every sub-batch whitened at once; pairs stay aligned across views
        whitened = cholesky_whiten(z[:, order].unflatten(1, (-1, whitening_size)))
        if normalize:
            whitened = F.normalize(whitened, dim=-1)
        for i, j in pairs:
            total = total + (whitened[i] - whitened[j]).pow(2).sum(dim=-1).mean() / (1 if normalize else dim)
    return total / (whitening_iterations * len(pairs))


# ---------------------------------------------------------------- supervised contrastive


def supcon_loss(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, gather_distributed: bool = True
) -> torch.Tensor:
    """The supervised contrastive loss L_out (Khosla et al., 2020, eq. 2): for every anchor i (every view of every
    image), -1/|P(i)| sum_{p in P(i)} log [exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau)], where P(i) are the
    other views whose image has the label of i (the anchor's own other views included); averaged over the anchors
    (an anchor without positive counts 0, as the original code). With unique labels it is SimCLR's NT-Xent.

    With `gather_distributed`, the local anchors are contrasted with the views (and labels) of every process,
    the views gathered with their gradient, so the mean of the per-process losses is the loss of the global batch.

    Args:
        z: (V, B, D) projections of V views of B images (not normalised).
        labels: (B,) integer class of every image.
        temperature: tau (0.1).
        gather_distributed: take positives and negatives from all processes.
    """
    if z.ndim != 3:
        raise ValueError(f"expected projections (views, batch, dim), got {tuple(z.shape)}")
    num_views, batch_size, _ = z.shape
    if labels.shape != (batch_size,) or labels.is_floating_point():
        raise ValueError(f"expected integer labels of shape ({batch_size},), got {labels.dtype} {tuple(labels.shape)}")
    if num_views * batch_size < 2:
        raise ValueError("SupCon needs at least two views in the batch")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    anchors = F.normalize(z, dim=-1).flatten(0, 1)  # (V B, D), view-major
    anchor_labels = labels.repeat(num_views)
    candidates, candidate_labels, offset = anchors, anchor_labels, 0
    if gather_distributed and world_size() > 1:
        candidates = gather_with_grad(anchors)  # (W V B, D): process-major, then view-major
        candidate_labels = gather_no_grad(labels).view(world_size(), 1, batch_size).expand(-1, num_views, -1).flatten()
        offset = rank() * anchors.shape[0]

    logits = anchors @ candidates.T / temperature
    is_self = F.one_hot(torch.arange(anchors.shape[0], device=z.device) + offset, candidates.shape[0]).bool()
    log_probs = F.log_softmax(logits.masked_fill(is_self, float("-inf")), dim=1)
    positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    num_positives = positive.sum(dim=1)
    mean_log_prob = log_probs.masked_fill(~positive, 0.0).sum(dim=1) / num_positives.clamp(min=1)
    return -mean_log_prob.mean()


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MAE's reconstruction loss (MaskFeat's too): the mean squared error of a patch, averaged over masked patches.

    L = sum_i m_i * mean_j (pred_ij - target_ij)^2 / sum_i m_i, for pred and target (B, N, P), mask m (B, N).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:-1]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} disagree")
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: the mean absolute error over the pixels (and channels) of the masked patches.

    L = sum_i m_i * sum_j |pred_ij - target_ij| / (P sum_i m_i), for pred and target (B, N, P), mask m (B, N).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:-1]:
        raise ValueError(f"pred {tuple(pred.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} disagree")
    per_patch = (pred - target).abs().mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


def masked_token_cross_entropy(masked_logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BEiT's masked image modeling loss: cross-entropy of the visual token z_i of every masked patch i.

    L = -mean over masked i of log softmax(logits_i)[z_i]. `masked_logits` (M, K) are the logits of the M masked
    patches only, in the order of `mask.nonzero()` (row-major over (B, N)): the head runs on masked tokens only, as
    BEiT's; `tokens` (B, N) the tokenizer's ids, `mask` (B, N) bool.
    """
    if tokens.shape != mask.shape or masked_logits.ndim != 2:
        raise ValueError(f"expected masked_logits (M, K), tokens and mask (B, N); got {tuple(masked_logits.shape)}, "
                         f"{tuple(tokens.shape)}, {tuple(mask.shape)}")  # fmt: skip
    return F.cross_entropy(masked_logits.float(), tokens[mask])
