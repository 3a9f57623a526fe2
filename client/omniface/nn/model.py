"""``OmniFaceNet``: one compact trunk shared (hard parameter sharing) by an anchor-free
face detector and per-task attribute heads.

Layout::

    frames [N,3,H,W] (H, W multiples of 32, normalised)
      -> trunk (stem s2, stages s4/s8/s16/s32 of depthwise-separable residual blocks)
      -> C3 (s8), C4 (s16), C5 (s32)
      -> PAN neck (1x1 laterals, top-down + bottom-up, depthwise-separable smoothing)
      -> detection head shared across levels (shared convs, per-level BatchNorm)
      -> score logit, 4 box distances, 10 landmark offsets per cell

    crops [N,3,112,112] (aligned, normalised)
      -> the same trunk -> global average pool of C4 and C5 (concatenated)
      -> one small MLP per task

Detection outputs follow ``omniface.contract``: locations are concatenated stride 8,
16, 32, row-major per level (index = y * fw + x), each cell centred at
((x + 0.5) * s, (y + 0.5) * s). ``boxes`` are (left, top, right, bottom) distances from
that centre in stride units, made non-negative with ``softplus`` (smooth, never dead,
no overflow: it trains more stably than ``exp`` and keeps gradients where ``relu``
would not). ``landmarks`` are 5 x (dx, dy) offsets from the centre in stride units,
unconstrained.

Attribute outputs are raw training outputs (logits, degrees); ``coral_age`` turns the
CORAL rank logits into an age and its standard deviation. The CORAL biases are
non-increasing by construction (a free first bias minus a cumulative sum of
softplus gaps), and all ranks share one weight vector, so P(age > k) is
non-increasing in k for every input and every weight setting (rank consistency).
"""

from __future__ import annotations

import math
import os
from typing import Callable

from omniface import contract
from omniface.errors import require

from .blocks import ConvBNAct, DWSep, Stage, make_divisible, split_batchnorms

torch = require("torch", "train")
nn = torch.nn
F = torch.nn.functional

# Architecture at width 1.0. Channels are multiplied by ``width`` and rounded to 8.
STEM_CHANNELS = 16
STAGES: tuple[tuple[int, int], ...] = ((32, 1), (64, 3), (128, 4), (256, 3))
"""(channels, residual blocks) of the stages at strides 4, 8, 16, 32."""
NECK_CHANNELS = 64
HEAD_DEPTH = 2
"""Depthwise-separable convs in the shared detection head before the 1x1 predictors."""
ATTR_HIDDEN = 128
ATTR_TRUNKS = ("shared", "separate")
"""Whether crops go through the detector's trunk (hard parameter sharing) or their own."""
ATTR_DROPOUT = 0.1

HEAD_POSE_SCALE = 45.0
"""The head-pose head predicts degrees / 45 (unit-scale targets train better); the
module output is already multiplied back to degrees."""

SCORE_PRIOR = 0.01
"""Initial face probability of every location (focal-loss style bias init)."""
BOX_INIT = 1.5
"""Initial box distance, in stride units, of every location."""

CORAL_INIT_CENTRE = 30.0
CORAL_INIT_SPREAD = 10.0
"""CORAL biases start at (centre - k) / spread: an age of about 30 at zero features."""

TASK_OUTPUT_KEYS: dict[str, str] = {
    "age": "age_logits",
    "gender": "gender_logit",
    "expression": "expression_logits",
    "smile": "smile_logit",
    "head_pose": "head_pose",
    "glasses": "glasses_logit",
    "action_units": "au_logits",
}
"""Key of each task's raw output in the dict ``OmniFaceNet.attributes`` returns."""

DETECT_OUTPUT_KEYS: tuple[str, ...] = ("score_logits", "boxes", "landmarks")


def _inv_softplus(y: float) -> float:
    return math.log(math.expm1(y))


# --------------------------------------------------------------------------------------
# Pure functions.
# --------------------------------------------------------------------------------------


def coral_age(age_logits):
    """CORAL rank logits ``[..., K]`` -> ``(age, age_std)``, each ``[...]``, in years.

    p_k = sigmoid(logit_k) = P(age > AGE_MIN + k - 1); age = AGE_MIN + sum_k p_k.
    The implied distribution is P(age = AGE_MIN + j) = p_j - p_{j+1} (p_0 = 1,
    p_{K+1} = 0), clamped at 0 and renormalised; age_std is the square root of its
    variance (its mean equals ``age`` whenever the p_k are non-increasing).
    """
    p = torch.sigmoid(age_logits)
    age = contract.AGE_MIN + p.sum(dim=-1)
    ones = torch.ones_like(p[..., :1])
    zeros = torch.zeros_like(p[..., :1])
    ext = torch.cat([ones, p, zeros], dim=-1)
    probs = (ext[..., :-1] - ext[..., 1:]).clamp_min(0.0)
    probs = probs / probs.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    j = torch.arange(probs.shape[-1], dtype=probs.dtype, device=probs.device)
    mean = (probs * j).sum(dim=-1, keepdim=True)
    var = (probs * (j - mean) ** 2).sum(dim=-1)
    return age, torch.sqrt(var.clamp_min(1e-12))


def level_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Feature-map (rows, cols) of each detection level for an input size."""
    return [(height // s, width // s) for s in contract.DETECTOR_STRIDES]


# --------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------


class Trunk(nn.Module):
    """Stem (3x3 s2) + 4 stages; returns the stride 8, 16 and 32 feature maps."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        stem = make_divisible(STEM_CHANNELS * width)
        self.stem = nn.Sequential(ConvBNAct(3, stem, 3, 2), DWSep(stem, stem))
        stages, cin = [], stem
        for channels, depth in STAGES:
            cout = make_divisible(channels * width)
            stages.append(Stage(cin, cout, depth))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(make_divisible(c * width) for c, _ in STAGES[1:])

    def forward(self, x):
        x = self.stem(x)
        x = self.stages[0](x)
        c3 = self.stages[1](x)
        c4 = self.stages[2](c3)
        c5 = self.stages[3](c4)
        return c3, c4, c5


class PANNeck(nn.Module):
    """1x1 laterals to a common width, top-down (nearest x2 upsample + add) then
    bottom-up (depthwise stride-2 conv + add) paths, each merge smoothed by a
    depthwise-separable conv."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNAct(c, channels, 1) for c in in_channels)
        self.top_down = nn.ModuleList(DWSep(channels, channels) for _ in range(2))
        self.down = nn.ModuleList(ConvBNAct(channels, channels, 3, 2, groups=channels, act=False) for _ in range(2))
        self.bottom_up = nn.ModuleList(DWSep(channels, channels) for _ in range(2))

    def forward(self, feats):
        l3, l4, l5 = (lat(f) for lat, f in zip(self.lateral, feats))
        p4 = self.top_down[0](l4 + F.interpolate(l5, scale_factor=2.0, mode="nearest"))
        p3 = self.top_down[1](l3 + F.interpolate(p4, scale_factor=2.0, mode="nearest"))
        n4 = self.bottom_up[0](p4 + self.down[0](p3))
        n5 = self.bottom_up[1](l5 + self.down[1](n4))
        return p3, n4, n5


class SharedHead(nn.Module):
    """Anchor-free detection head whose convolutions are shared by all levels; only
    the BatchNorms are per level (feature statistics differ between strides)."""

    def __init__(self, channels: int, levels: int, depth: int = HEAD_DEPTH):
        super().__init__()
        self.dw = nn.ModuleList(nn.Conv2d(channels, channels, 3, 1, 1, groups=channels, bias=False) for _ in range(depth))
        self.pw = nn.ModuleList(nn.Conv2d(channels, channels, 1, bias=False) for _ in range(depth))
        self.dw_bn = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels)) for _ in range(depth))
        self.pw_bn = nn.ModuleList(nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(levels)) for _ in range(depth))
        self.score = nn.Conv2d(channels, 1, 1)
        self.box = nn.Conv2d(channels, 4, 1)
        self.landmark = nn.Conv2d(channels, 2 * contract.NUM_LANDMARKS, 1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.constant_(self.score.bias, -math.log((1 - SCORE_PRIOR) / SCORE_PRIOR))
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, _inv_softplus(BOX_INIT))
        nn.init.normal_(self.landmark.weight, std=0.01)
        nn.init.zeros_(self.landmark.bias)

    def forward(self, x, level: int):
        for dw, pw, dw_bn, pw_bn in zip(self.dw, self.pw, self.dw_bn, self.pw_bn):
            x = F.relu(dw_bn[level](dw(x)))
            x = F.relu(pw_bn[level](pw(x)))
        return self.score(x), F.softplus(self.box(x)), self.landmark(x)


class MLPHead(nn.Sequential):
    """Linear -> ReLU -> Dropout -> Linear."""

    def __init__(self, cin: int, hidden: int, cout: int, dropout: float = ATTR_DROPOUT):
        super().__init__(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, cout))


class CoralHead(nn.Module):
    """CORAL ordinal head: a hidden layer, ONE shared weight vector ``w`` (no bias) and
    K rank biases b_1 >= b_2 >= ... >= b_K, enforced by construction:
    b_k = b_1 - sum_{j<k} softplus(gap_j). logits_k = w . h + b_k."""

    def __init__(self, cin: int, hidden: int, ranks: int = contract.AGE_RANKS, dropout: float = ATTR_DROPOUT):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.w = nn.Linear(hidden, 1, bias=False)
        self.first_bias = nn.Parameter(torch.tensor((CORAL_INIT_CENTRE - 1.0) / CORAL_INIT_SPREAD))
        self.bias_gaps = nn.Parameter(torch.full((ranks - 1,), _inv_softplus(1.0 / CORAL_INIT_SPREAD)))

    def biases(self):
        steps = torch.cat([self.first_bias.new_zeros(1), F.softplus(self.bias_gaps)])
        return self.first_bias - torch.cumsum(steps, dim=0)

    def forward(self, x):
        return self.w(self.hidden(x)) + self.biases()


class OmniFaceNet(nn.Module):
    """Multi-task face network: ``detect`` on frames, ``attributes`` on aligned crops,
    both through the same trunk."""

    def __init__(self, tasks: tuple[str, ...] = contract.DEFAULT_TASKS, width: float = 1.0, split_bn: bool = False,
                 attr_trunk: str = "shared", attr_width: float = 1.5):
        super().__init__()
        if attr_trunk not in ATTR_TRUNKS:
            raise ValueError(f"attr_trunk must be one of {ATTR_TRUNKS}, got {attr_trunk!r}")
        tasks = tuple(tasks)
        unknown = [t for t in tasks if t not in contract.TASKS_BY_NAME]
        if unknown:
            raise ValueError(f"unknown tasks {unknown}; known: {[t.name for t in contract.TASKS]}")
        # Keep the contract's task order whatever order the caller used.
        self.tasks = tuple(t.name for t in contract.TASKS if t.name in tasks)
        self.width = float(width)

        self.trunk = Trunk(width)
        neck = make_divisible(NECK_CHANNELS * width)
        self.neck = PANNeck(self.trunk.channels, neck)
        self.head = SharedHead(neck, len(contract.DETECTOR_STRIDES))

        # attr_trunk = "separate": the crops get their own trunk, sized for 112 px faces
        # (it runs once per face, the detector's once per frame); "shared": hard sharing.
        self.attr_trunk_kind = attr_trunk
        self.attr_width = float(attr_width) if attr_trunk == "separate" else self.width
        self.attr_trunk = Trunk(self.attr_width) if attr_trunk == "separate" else None
        crop_trunk = self.attr_trunk if self.attr_trunk is not None else self.trunk
        pooled = crop_trunk.channels[1] + crop_trunk.channels[2]
        hidden = make_divisible(ATTR_HIDDEN * max(width, self.attr_width))
        outputs = {
            "gender": 1,
            "expression": len(contract.EXPRESSIONS),
            "smile": 1,
            "head_pose": len(contract.HEAD_POSE_ANGLES),
            "glasses": 1,
            "action_units": len(contract.ACTION_UNITS),
        }
        heads = {}
        for task in self.tasks:
            heads[task] = CoralHead(pooled, hidden) if task == "age" else MLPHead(pooled, hidden, outputs[task])
        self.heads = nn.ModuleDict(heads)
        self._init_weights()
        # split_bn: the trunk keeps separate BatchNorm statistics for frames and crops
        # (blocks.DomainBatchNorm2d); detect() and embed() select theirs. Off by default:
        # no gain at 1,200 steps (MODEL_CARD.md, Ablation).
        self.split_bn = bool(split_bn)
        self._domain_norms = split_batchnorms(self.trunk) if self.split_bn else []

    def _use_domain(self, domain: str) -> None:
        for norm in self._domain_norms:
            norm.domain = domain

    @property
    def config(self) -> dict:
        """What ``load_model`` needs to rebuild this network."""
        return {"tasks": list(self.tasks), "width": self.width, "split_bn": self.split_bn,
                "attr_trunk": self.attr_trunk_kind, "attr_width": self.attr_width,
                "contract_version": contract.CONTRACT_VERSION}

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in (self.head.score, self.head.box, self.head.landmark):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.modules():
            # Zero-init the last BN of each residual branch: blocks start as identity.
            if block.__class__.__name__ == "ResidualDW":
                nn.init.zeros_(block.pw[1].weight)

    # ----------------------------------------------------------------------------------

    def detect(self, x) -> dict:
        """Normalised frames ``[N,3,H,W]`` (H, W multiples of 32) -> raw detections:
        ``score_logits [N,L]``, ``boxes [N,L,4]``, ``landmarks [N,L,10]``."""
        if not torch.jit.is_tracing():
            h, w = x.shape[-2:]
            stride = max(contract.DETECTOR_STRIDES)
            if h % stride or w % stride:
                raise ValueError(f"detect() needs height and width divisible by {stride}, got {h}x{w}")
        self._use_domain("frames")
        feats = self.neck(self.trunk(x))
        scores, boxes, landmarks = [], [], []
        for level, f in enumerate(feats):
            s, b, lm = self.head(f, level)
            # Flatten the cells, batch kept: no size is baked in, so the exported graph
            # takes any height and width (L follows them). Index within a level: y*w + x.
            scores.append(s.flatten(1))
            boxes.append(b.permute(0, 2, 3, 1).flatten(1, 2))
            landmarks.append(lm.permute(0, 2, 3, 1).flatten(1, 2))
        return {
            "score_logits": torch.cat(scores, dim=1),
            "boxes": torch.cat(boxes, dim=1),
            "landmarks": torch.cat(landmarks, dim=1),
        }

    def embed(self, x):
        """Normalised crops ``[N,3,112,112]`` -> pooled shared features ``[N,D]``."""
        if self.attr_trunk is not None:
            _, c4, c5 = self.attr_trunk(x)
            return torch.cat([c4.mean(dim=(2, 3)), c5.mean(dim=(2, 3))], dim=1)
        self._use_domain("crops")
        _, c4, c5 = self.trunk(x)
        return torch.cat([c4.mean(dim=(2, 3)), c5.mean(dim=(2, 3))], dim=1)

    def attributes(self, x) -> dict:
        """Normalised crops ``[N,3,112,112]`` -> raw outputs of the requested tasks
        (keys in ``TASK_OUTPUT_KEYS``)."""
        return self.read_heads(self.embed(x))

    def read_heads(self, h) -> dict:
        """Pooled features ``[N,D]`` (``embed``) -> raw outputs of the tasks' heads; on
        its own so the heads can be trained on frozen features (``training.refit``)."""
        out = {}
        for task, head in self.heads.items():
            y = head(h)
            if task == "head_pose":
                y = y * HEAD_POSE_SCALE
            elif task in ("gender", "smile", "glasses"):
                y = y.squeeze(1)
            out[TASK_OUTPUT_KEYS[task]] = y
        return out

    def forward(self, frames=None, crops=None) -> dict:
        """The union of ``detect(frames)`` and ``attributes(crops)`` (either may be None)."""
        if frames is None and crops is None:
            raise ValueError("OmniFaceNet.forward needs frames, crops or both")
        out = {}
        if frames is not None:
            out.update(self.detect(frames))
        if crops is not None:
            out.update(self.attributes(crops))
        return out


# --------------------------------------------------------------------------------------
# Checkpoints and profiling.
# --------------------------------------------------------------------------------------


def save_checkpoint(model: OmniFaceNet, path: str | os.PathLike, **extra) -> None:
    """Write ``{"model": state_dict, "config": model.config, **extra}``."""
    torch.save({"model": model.state_dict(), "config": model.config, **extra}, os.fspath(path))


def build_model(config: dict) -> OmniFaceNet:
    return OmniFaceNet(tasks=tuple(config.get("tasks", contract.DEFAULT_TASKS)), width=float(config.get("width", 1.0)),
                       split_bn=bool(config.get("split_bn", False)), attr_trunk=str(config.get("attr_trunk", "shared")),
                       attr_width=float(config.get("attr_width", 1.5)))


def load_model(path: str | os.PathLike, map_location: str = "cpu") -> OmniFaceNet:
    """Rebuild an ``OmniFaceNet`` from a checkpoint written by ``save_checkpoint``;
    returned in eval mode."""
    ckpt = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not an OmniFaceNet checkpoint (expected a dict with 'model' and 'config')")
    model = build_model(ckpt["config"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def count_macs(module: nn.Module, fn: Callable, *args) -> int:
    """Multiply-accumulates of Conv2d and Linear layers for one call ``fn(*args)``,
    per sample of the batch (FLOPs ~ 2 x MACs)."""
    total = 0

    def hook(m, inputs, output):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            per_out = m.in_features
        total += output.numel() // output.shape[0] * per_out

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            fn(*args)
    finally:
        for h in handles:
            h.remove()
    return total
