"""Per-task losses with label masks.

Every task loss is a mean over the samples that carry the task's label. A batch without
any such sample gives a constant zero that is not connected to the graph: the task then
contributes exactly zero loss *and* zero (``None``) gradient to its head, and optimisers
skip its parameters (no momentum or weight-decay step either).

Detection (per batch, normalised by the number of positive locations, >= 1):
  * scores: quality focal loss (Li et al., GFL 2020) with the IoU of the decoded predicted
    box and its face as the positive target, ``|y - p|^beta * BCE(p, y)``; or the 0/1
    sigmoid focal loss (Lin et al. 2017), ``alpha_t (1 - p_t)^gamma BCE``.
  * boxes: 1 - GIoU (Rezatofighi et al. 2019) or 1 - DIoU of decoded boxes, positives only.
  * landmarks: smooth-L1 (RetinaFace) or Wing (Feng et al. 2018) on the stride-unit
    offsets, summed over the 10 coordinates, positives with landmarks only.
Attributes: CORAL (Cao et al. 2020) for age, BCE for gender / smile / glasses / AUs,
cross-entropy for expression (optionally weighted per sample by ReSup), smooth-L1 in
degrees for head pose.
"""

from __future__ import annotations

import math

from omniface import contract
from omniface.errors import require

from .targets import decode_boxes

torch = require("torch", "train")
F = torch.nn.functional


def zero(ref):
    """A constant 0 not connected to any parameter."""
    return torch.zeros((), device=ref.device, dtype=torch.float32)


def masked_mean(values, mask, weights=None):
    """Mean of ``values [N]`` over ``mask``; with ``weights``, ``sum(w v) / count``.
    No labelled sample -> an unconnected 0."""
    if mask is None:
        mask = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
    if not bool(mask.any()):
        return zero(values)
    v = values[mask]
    if weights is not None:
        v = v * weights[mask].to(v.dtype)
    return v.sum() / mask.sum()


# ---------------------------------------------------------------------------- elementwise


def focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return a_t * (1 - p_t) ** gamma * ce


def quality_focal_loss(logits, quality, beta: float = 2.0):
    """``|q - sigmoid(x)|^beta * BCE(sigmoid(x), q)`` for soft targets ``q`` in [0, 1]."""
    p = torch.sigmoid(logits)
    return (quality - p).abs().pow(beta) * F.binary_cross_entropy_with_logits(logits, quality, reduction="none")


def giou_loss(pred, target, eps: float = 1e-7):
    """``1 - GIoU`` of paired boxes ``[P,4]`` (x1 y1 x2 y2)."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    ap = (pred[:, 2:] - pred[:, :2]).clamp_min(0).prod(-1)
    at = (target[:, 2:] - target[:, :2]).clamp_min(0).prod(-1)
    union = ap + at - inter
    iou = inter / (union + eps)
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).clamp_min(0).prod(-1)
    return 1 - (iou - (hull - union) / (hull + eps))


def diou_loss(pred, target, eps: float = 1e-7):
    """``1 - DIoU``: 1 - IoU + centre distance^2 / enclosing diagonal^2."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    ap = (pred[:, 2:] - pred[:, :2]).clamp_min(0).prod(-1)
    at = (target[:, 2:] - target[:, :2]).clamp_min(0).prod(-1)
    iou = inter / (ap + at - inter + eps)
    cp, ct = (pred[:, :2] + pred[:, 2:]) / 2, (target[:, :2] + target[:, 2:]) / 2
    diag = ((torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])) ** 2).sum(-1)
    return 1 - iou + ((cp - ct) ** 2).sum(-1) / (diag + eps)


def smooth_l1(x, beta: float = 1.0):
    """Elementwise Huber-style smooth-L1 of a residual ``x``."""
    a = x.abs()
    if beta <= 0:
        return a
    return torch.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def wing_loss(x, w: float = 1.0, eps: float = 0.2):
    """Wing loss of a residual: ``w ln(1 + |x|/eps)`` for |x| < w, else ``|x| - C``."""
    a = x.abs()
    c = w - w * math.log(1 + w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def coral_targets(age):
    """Ages ``[N]`` -> CORAL rank targets ``[N, AGE_RANKS]``: t_k = [age > AGE_MIN + k]."""
    ks = torch.arange(contract.AGE_RANKS, device=age.device, dtype=torch.float32)
    return (age.float()[:, None] > contract.AGE_MIN + ks[None, :]).float()


def coral_loss(logits, age, reduction: str = "sum"):
    """Per-sample CORAL loss: binary CE over the rank tasks, summed (Cao et al.) or
    averaged (``"mean"``, the same direction on the scale of one BCE)."""
    bce = F.binary_cross_entropy_with_logits(logits, coral_targets(age), reduction="none")
    return bce.sum(1) if reduction == "sum" else bce.mean(1)


# ---------------------------------------------------------------------------- detection


def detection_losses(out: dict, targets: dict, cfg: dict | None = None) -> dict:
    """``out``: the network's ``detect`` dict; ``targets``: ``targets.batch_targets``.
    Returns ``{"det_score", "det_box", "det_landmarks"}`` and ``num_pos``."""
    cfg = cfg or {}
    pos = targets["positive"]
    num_pos = pos.sum()
    norm = num_pos.clamp_min(1).float()
    logits = out["score_logits"]
    losses = {}
    pred_boxes = decode_boxes(out["boxes"], targets["centres"], targets["strides"])
    if cfg.get("score", "qfl") == "qfl":
        quality = torch.zeros_like(logits)
        if bool(pos.any()):
            with torch.no_grad():
                lt = torch.maximum(pred_boxes[pos][:, :2], targets["box"][pos][:, :2])
                rb = torch.minimum(pred_boxes[pos][:, 2:], targets["box"][pos][:, 2:])
                inter = (rb - lt).clamp_min(0).prod(-1)
                ap = (pred_boxes[pos][:, 2:] - pred_boxes[pos][:, :2]).clamp_min(0).prod(-1)
                at = (targets["box"][pos][:, 2:] - targets["box"][pos][:, :2]).clamp_min(0).prod(-1)
                quality[pos] = (inter / (ap + at - inter).clamp_min(1e-9)).clamp(0, 1).to(quality.dtype)
        losses["det_score"] = quality_focal_loss(logits, quality, cfg.get("qfl_beta", 2.0)).sum() / norm
    else:
        losses["det_score"] = focal_loss(logits, pos.float(), cfg.get("focal_alpha", 0.25), cfg.get("focal_gamma", 2.0)).sum() / norm
    if bool(pos.any()):
        box_fn = diou_loss if cfg.get("box", "giou") == "diou" else giou_loss
        losses["det_box"] = box_fn(pred_boxes[pos], targets["box"][pos]).mean()
    else:
        losses["det_box"] = zero(logits)
    lm_mask = targets["landmark_mask"]
    if bool(lm_mask.any()):
        r = out["landmarks"][lm_mask] - targets["landmarks"][lm_mask]
        if cfg.get("landmark", "smooth_l1") == "wing":
            per = wing_loss(r, cfg.get("wing_w", 1.0), cfg.get("wing_eps", 0.2))
        else:
            per = smooth_l1(r, cfg.get("smooth_l1_beta", 1.0 / 9.0))
        losses["det_landmarks"] = per.sum(1).mean()
    else:
        losses["det_landmarks"] = zero(logits)
    losses["num_pos"] = num_pos
    return losses


# ---------------------------------------------------------------------------- attributes

OUTPUT_KEYS = {
    "age": "age_logits", "gender": "gender_logit", "expression": "expression_logits", "smile": "smile_logit",
    "head_pose": "head_pose", "glasses": "glasses_logit", "action_units": "au_logits",
}


def attribute_losses(out: dict, labels: dict, mask: dict, cfg: dict | None = None, weights: dict | None = None) -> dict:
    """Masked per-task losses for the tasks present in both ``out`` and ``labels``.
    ``weights``: optional per-sample weights per task (ReSup's for expression)."""
    cfg = cfg or {}
    weights = weights or {}
    losses = {}
    for task, key in OUTPUT_KEYS.items():
        if key not in out or task not in labels:
            continue
        pred, y, m = out[key], labels[task], mask[task]
        if task == "age":
            per = coral_loss(pred, y, cfg.get("coral_reduction", "sum"))
        elif task in ("gender", "smile", "glasses"):
            per = F.binary_cross_entropy_with_logits(pred, y.float(), reduction="none")
        elif task == "expression":
            prior = cfg.get("expression_log_prior")
            tau = float(cfg.get("expression_logit_adjust", 0.0))
            if prior is not None and tau > 0:
                # Logit adjustment (Menon et al., ICLR 2021): train on logits + tau log
                # prior, predict with the raw logits -> balanced rather than majority.
                pred = pred + tau * torch.as_tensor(prior, dtype=pred.dtype, device=pred.device)
            per = F.cross_entropy(pred, y.long().clamp(0, pred.shape[1] - 1), reduction="none",
                                  label_smoothing=float(cfg.get("expression_label_smoothing", 0.0)))
        elif task == "head_pose":
            per = smooth_l1(pred - y.float(), cfg.get("pose_beta", 1.0)).mean(1)
        else:  # action_units
            per = F.binary_cross_entropy_with_logits(pred, y.float(), reduction="none").mean(1)
        losses[task] = masked_mean(per, m, weights.get(task))
    return losses
