"""Anchor-free target assignment for the detector layout of ``omniface.contract``.

Locations are the cell centres ((x + 0.5) * s, (y + 0.5) * s) of the stride 8, 16, 32
maps, concatenated stride by stride, row-major within a level.

Assignment: ATSS (Zhang et al., CVPR 2020), as SCRFD uses it for faces
--------------------------------------------------------------------------
Each location gets one square "anchor box" of side ``anchor_sizes[level]`` centred on it
(only to measure scale fit; the network regresses distances, not anchor offsets). For each
ground-truth face:

1. candidates = the ``topk`` locations of each level whose centres are closest to the
   face centre (all of a level's locations if it has fewer);
2. threshold = mean + std (unbiased) of the candidates' anchor/face IoUs;
3. positives = candidates with IoU >= threshold whose centre lies strictly inside the
   face box;
4. a location claimed by several faces keeps the one with the highest IoU;
5. fallback (ours, not ATSS): a face left without a positive -- tiny faces whose box
   contains no cell centre -- gets its highest-IoU candidate if that location is free.

Why ATSS rather than a fixed centre-region + scale-range rule (FCOS) or simOTA: its
per-face adaptive threshold picks the level(s) whose anchor size matches the face
without hand-set size ranges, which matters for WIDER's wide face-size spread, and it
needs no predictions (simOTA's cost needs them), so targets are a pure function of the
boxes: deterministic and unit-testable. The default anchor sizes (24, 90, 360 px) are the
geometric means of SCRFD's two anchors per level ([16, 32], [64, 128], [256, 512]).

Per-location targets: ``positive``, ``gt_index``, the face box in pixels (for GIoU on
decoded boxes), ``ltrb`` distances from the centre in stride units (clamped >= 0, the
network's range), landmark offsets (dx, dy) * 5 from the centre in stride units and a
landmark mask (faces without landmark annotation are masked).
"""

from __future__ import annotations

from omniface import contract
from omniface.errors import require

torch = require("torch", "train")

ANCHOR_SIZES_DEFAULT = (24.0, 90.0, 360.0)


def anchor_points(height: int, width: int, strides=contract.DETECTOR_STRIDES, device=None):
    """``(centres [L,2] x, y pixels, strides [L], level [L])`` in the contract's order."""
    centres, stride_of, level_of = [], [], []
    for level, s in enumerate(strides):
        fh, fw = height // s, width // s
        ys, xs = torch.meshgrid(torch.arange(fh, device=device), torch.arange(fw, device=device), indexing="ij")
        c = torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], dim=1).float()
        centres.append(c)
        stride_of.append(torch.full((fh * fw,), float(s), device=device))
        level_of.append(torch.full((fh * fw,), level, dtype=torch.int64, device=device))
    return torch.cat(centres), torch.cat(stride_of), torch.cat(level_of)


def box_iou(a, b):
    """Pairwise IoU of ``a [N,4]`` and ``b [M,4]`` (x1 y1 x2 y2) -> ``[N,M]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-9)


def assign_atss(gt_boxes, centres, strides, levels, topk: int = 9, anchor_sizes=ANCHOR_SIZES_DEFAULT,
                fallback: bool = True):
    """Face index per location (``-1`` = negative), and the IoU used (``[L]`` each)."""
    n_loc = centres.shape[0]
    assigned = torch.full((n_loc,), -1, dtype=torch.int64, device=centres.device)
    best_iou = torch.zeros(n_loc, device=centres.device)
    if gt_boxes.numel() == 0:
        return assigned, best_iou
    gt = gt_boxes.float()
    sizes = torch.as_tensor(anchor_sizes, dtype=torch.float32, device=centres.device)[levels]
    anchors = torch.cat([centres - sizes[:, None] / 2, centres + sizes[:, None] / 2], dim=1)
    iou = box_iou(gt, anchors)  # [G, L]
    gt_c = (gt[:, :2] + gt[:, 2:]) / 2
    dist = torch.cdist(gt_c, centres)  # [G, L]
    cand = torch.zeros_like(iou, dtype=torch.bool)
    for level in range(int(levels.max()) + 1):
        idx = torch.nonzero(levels == level).squeeze(1)
        k = min(topk, idx.numel())
        if k == 0:
            continue
        near = dist[:, idx].topk(k, dim=1, largest=False).indices
        cand.scatter_(1, idx[near], True)
    cand_iou = torch.where(cand, iou, torch.zeros_like(iou))
    count = cand.sum(1).clamp_min(1)
    mean = cand_iou.sum(1) / count
    var = (torch.where(cand, (iou - mean[:, None]) ** 2, torch.zeros_like(iou))).sum(1) / (count - 1).clamp_min(1)
    thr = mean + var.sqrt()
    inside = ((centres[None, :, 0] - gt[:, None, 0] > 0.01) & (centres[None, :, 1] - gt[:, None, 1] > 0.01)
              & (gt[:, None, 2] - centres[None, :, 0] > 0.01) & (gt[:, None, 3] - centres[None, :, 1] > 0.01))
    pos = cand & (iou >= thr[:, None]) & inside
    score = torch.where(pos, iou, torch.full_like(iou, -1.0))
    top, which = score.max(0)
    claimed = top >= 0
    assigned[claimed] = which[claimed]
    best_iou[claimed] = top[claimed]
    if fallback:
        for g in torch.nonzero(~pos.any(1)).squeeze(1).tolist():
            loc = int(torch.where(cand[g], iou[g], torch.full_like(iou[g], -1.0)).argmax())
            if assigned[loc] < 0:
                assigned[loc] = g
                best_iou[loc] = iou[g, loc]
    return assigned, best_iou


def build_targets(gt_boxes, gt_landmarks, landmark_valid, centres, strides, levels, topk: int = 9,
                  anchor_sizes=ANCHOR_SIZES_DEFAULT, fallback: bool = True) -> dict:
    """Per-location targets for one image (see the module docstring)."""
    assigned, _ = assign_atss(gt_boxes, centres, strides, levels, topk, anchor_sizes, fallback)
    n_loc = centres.shape[0]
    pos = assigned >= 0
    g = assigned.clamp_min(0)
    dev = centres.device
    box = torch.zeros(n_loc, 4, device=dev)
    lm = torch.zeros(n_loc, 2 * contract.NUM_LANDMARKS, device=dev)
    lm_mask = torch.zeros(n_loc, dtype=torch.bool, device=dev)
    if gt_boxes.numel():
        box = gt_boxes.float().to(dev)[g]
        box[~pos] = 0
        if gt_landmarks is not None and gt_landmarks.numel():
            pts = gt_landmarks.float().to(dev)[g]  # [L,5,2]
            lm = ((pts - centres[:, None, :]) / strides[:, None, None]).reshape(n_loc, -1)
            lm_mask = pos & landmark_valid.to(dev)[g]
            lm[~lm_mask] = 0
    s = strides[:, None]
    ltrb = torch.cat([centres - box[:, :2], box[:, 2:] - centres], dim=1) / s
    ltrb = torch.where(pos[:, None], ltrb.clamp_min(0), torch.zeros_like(ltrb))
    return {"positive": pos, "gt_index": assigned, "box": box, "ltrb": ltrb, "landmarks": lm, "landmark_mask": lm_mask}


def batch_targets(boxes: list, landmarks: list, landmark_valid: list, height: int, width: int, **kwargs) -> dict:
    """``build_targets`` over a batch of images -> stacked ``[N, L, ...]`` tensors, plus
    the shared ``centres [L,2]`` and ``strides [L]``."""
    device = kwargs.pop("device", None)
    centres, strides, levels = anchor_points(height, width, device=device)
    per = [build_targets(b.to(centres.device), lm.to(centres.device), v.to(centres.device), centres, strides, levels, **kwargs)
           for b, lm, v in zip(boxes, landmarks, landmark_valid)]
    out = {k: torch.stack([p[k] for p in per]) for k in per[0]}
    out["centres"], out["strides"] = centres, strides
    return out


def decode_boxes(ltrb, centres, strides):
    """Distances ``[..., L, 4]`` in stride units -> boxes x1 y1 x2 y2 in pixels."""
    s = strides[:, None]
    return torch.cat([centres - ltrb[..., :2] * s, centres + ltrb[..., 2:] * s], dim=-1)


def decode_landmarks(offsets, centres, strides):
    """Offsets ``[..., L, 10]`` in stride units -> landmarks ``[..., L, 5, 2]`` pixels."""
    pts = offsets.reshape(*offsets.shape[:-1], contract.NUM_LANDMARKS, 2)
    return centres[:, None, :] + pts * strides[:, None, None]
