"""SAM's training losses, computed as the official SAM 2 trainer computes them (``training/loss_fns.py``).

Focal and dice losses on the mask logits (weights 20:1 in the SAM paper and SAM 2's configs), a
regression of the predicted IoU on the real IoU of each thresholded mask (MSE as in SAM; SAM 2's
configs use L1), and for SAM 2 a focal loss on the object-score logit. With several candidate masks
per prompt, the mask losses back-propagate through the candidate with the lowest
``focal * w_mask + dice * w_dice`` only; the IoU loss through that one too, or through all
(``supervise_all_iou``). All are divided by the number of objects of the batch.

:func:`dice_loss` and :func:`sigmoid_focal_loss` are the official formulas term by term; a step's
candidates go through :func:`mask_terms`, the same two losses for {0, 1} targets with their gradient
formed in the forward pass (a few full-resolution passes instead of the ~30 that autograd records:
the losses of a training step at 192 px took ~20 % of it), equal to them to float rounding
(``tests/test_train_losses.py``); ``benchmarks/train_losses.py`` times them against the official trainer's.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, num_objects: float,
              per_candidate: bool = False) -> torch.Tensor:
    """``1 - (2|p·t| + 1) / (|p| + |t| + 1)`` with ``p = sigmoid(logits)``, per object (and candidate).

    ``per_candidate``: inputs (N, M, H, W), returns (N, M) / num_objects; else the sum over objects.
    """
    prob = logits.sigmoid()
    start = 2 if per_candidate else 1
    prob, targets = prob.flatten(start), targets.flatten(start)
    numerator = 2 * (prob * targets).sum(-1)
    loss = 1 - (numerator + 1) / (prob.sum(-1) + targets.sum(-1) + 1)
    return loss / num_objects if per_candidate else loss.sum() / num_objects


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, num_objects: float, alpha: float = 0.25,
                       gamma: float = 2.0, per_candidate: bool = False) -> torch.Tensor:
    """RetinaNet's focal loss, averaged over pixels; ``alpha < 0``: no class weighting.

    ``per_candidate``: inputs (N, M, H, W), returns (N, M) / num_objects; else (N, K) inputs averaged
    over K and summed over objects.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if per_candidate:
        return loss.flatten(2).mean(-1) / num_objects
    return loss.mean(1).sum() / num_objects


class _MaskTerms(torch.autograd.Function):
    """Per-candidate focal and dice losses of (N, M, H, W) logits against (N, 1, H, W) bool targets."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n, m = logits.shape[:2]
        x = logits.reshape(n, m, -1)
        t = targets.reshape(n, 1, -1).to(x.dtype)
        sign = 1 - 2 * t  # d(1 - p_t) / dp
        prob = x.sigmoid()
        miss = torch.addcmul(t, prob, sign)  # 1 - p_t
        ce = F.softplus(x).sub_(x * t)  # the logits' binary cross-entropy
        weight = miss.square() if gamma == 2 else miss.pow(gamma)
        class_weight = (1 - alpha) + t * (2 * alpha - 1) if alpha >= 0 else torch.ones_like(t)
        pixels = x.shape[-1]
        focal = (ce * weight).mul_(class_weight).sum(-1) / pixels
        numerator = 2 * (prob * t).sum(-1) + 1
        denominator = prob.sum(-1) + t.sum(-1) + 1
        dice = 1 - numerator / denominator
        if ctx.needs_input_grad[0]:
            # d focal / d x = sign a_t (1-p_t)^g (1-p_t + g p_t ce) / HW; d dice / d x = p (1-p) (A - 2tB) / B^2
            grad_focal = torch.addcmul(miss, ce, 1 - miss, value=gamma).mul_(weight).mul_(sign * class_weight / pixels)
            scale = (numerator / denominator.square())[..., None]
            grad_dice = torch.addcmul(scale, t, (2 / denominator)[..., None], value=-1).mul_(prob - prob.square())
            ctx.save_for_backward(grad_focal, grad_dice)
            ctx.shape = logits.shape
        return focal, dice

    @staticmethod
    def backward(ctx, grad_focal_out: torch.Tensor, grad_dice_out: torch.Tensor):  # type: ignore[override]
        grad_focal, grad_dice = ctx.saved_tensors
        grad = grad_focal * grad_focal_out[..., None]
        grad.addcmul_(grad_dice, grad_dice_out[..., None])
        return grad.reshape(ctx.shape), None, None, None


def mask_terms(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, M) focal (:func:`sigmoid_focal_loss`) and (N, M) dice (:func:`dice_loss`) losses of each candidate of
    (N, M, H, W) logits against (N, 1, H, W) {0, 1} targets, not yet divided by the number of objects."""
    return _MaskTerms.apply(logits, targets > 0, alpha, gamma)


def mask_ious(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with ``targets > 0`` per (N, M) candidate (an empty union counts as 1 pixel)."""
    pred, gt = logits.flatten(2) > 0, targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = pred.sum(-1).float() + gt.sum(-1).float() - inter
    return inter / union.clamp(min=1.0)


def iou_loss(logits: torch.Tensor, targets: torch.Tensor, pred_ious: torch.Tensor, num_objects: float,
             use_l1: bool = False) -> torch.Tensor:
    """(N, M) squared (or absolute) error between ``pred_ious`` and the real IoU, / num_objects."""
    actual = mask_ious(logits, targets)
    loss = F.l1_loss(pred_ious, actual, reduction="none") if use_l1 else F.mse_loss(pred_ious, actual, reduction="none")
    return loss / num_objects


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms and their options; defaults: the SAM paper (MSE IoU, best-candidate IoU)."""

    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    supervise_all_iou: bool = False
    iou_use_l1: bool = False
    object_score_alpha: float = -1.0
    object_score_gamma: float = 0.0


SAM2_WEIGHTS = LossWeights(supervise_all_iou=True, iou_use_l1=True)  # sam2.1_training configs


def step_losses(logits: torch.Tensor, targets: torch.Tensor, ious: torch.Tensor, num_objects: float,
                weights: LossWeights = LossWeights(),
                object_score_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The four loss terms of one prediction step.

    ``logits`` (N, M, H, W) candidates, ``targets`` (N, 1, H, W) {0, 1}, ``ious`` (N, M);
    ``object_score_logits`` (N, 1) for SAM 2 (None: every object counts as present, no class loss).
    """
    focal, dice = mask_terms(logits, targets, weights.focal_alpha, weights.focal_gamma)
    focal, dice = focal / num_objects, dice / num_objects
    iou = iou_loss(logits, targets, ious, num_objects, use_l1=weights.iou_use_l1)
    if object_score_logits is None:
        present = torch.ones(logits.shape[0], 1, dtype=focal.dtype, device=focal.device)
        object_score = torch.zeros((), dtype=focal.dtype, device=focal.device)
    else:
        present = (targets[:, 0] > 0).flatten(1).any(-1)[:, None].to(focal.dtype)
        object_score = sigmoid_focal_loss(object_score_logits, present, num_objects,
                                          weights.object_score_alpha, weights.object_score_gamma)
    if focal.shape[1] > 1:
        best = (focal * weights.mask + dice * weights.dice).argmin(-1)
        rows = torch.arange(focal.shape[0], device=focal.device)
        focal, dice = focal[rows, best, None], dice[rows, best, None]
        iou = iou.mean(-1, keepdim=True) if weights.supervise_all_iou else iou[rows, best, None]
    return {"loss_mask": (focal * present).sum(), "loss_dice": (dice * present).sum(),
            "loss_iou": (iou * present).sum(), "loss_class": object_score}


def total_loss(losses: dict[str, torch.Tensor], weights: LossWeights = LossWeights()) -> torch.Tensor:
    """The weighted sum the optimiser minimises (the official ``core_loss``)."""
    terms = {"loss_mask": weights.mask, "loss_dice": weights.dice, "loss_iou": weights.iou,
             "loss_class": weights.object_score}
    return sum((losses[key] * w for key, w in terms.items() if w != 0), 0.0)  # type: ignore[return-value]


def multistep_losses(steps: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], targets: torch.Tensor,
                     weights: LossWeights = LossWeights(), num_objects: float | None = None) -> dict[str, torch.Tensor]:
    """The losses summed over the interactive steps of one image: ``steps`` of (logits, ious,
    object_score_logits or None), ``targets`` (N, H, W); adds ``core_loss``, the weighted total."""
    num_objects = float(max(targets.shape[0], 1)) if num_objects is None else num_objects
    summed: dict[str, torch.Tensor] = {}
    for logits, ious, scores in steps:
        for key, value in step_losses(logits, targets[:, None], ious, num_objects, weights, scores).items():
            summed[key] = summed[key] + value if key in summed else value
    summed["core_loss"] = total_loss(summed, weights)
    return summed
