"""Training configuration: built-in defaults <- a TOML file <- ``--set key=value``.

Keys are dotted (``train.max_steps``). A value given with ``--set`` is read as a TOML
value (``3``, ``1e-3``, ``true``, ``[640, 480]``, ``"text"``) and falls back to a plain
string. Unknown keys are errors (a typo must not silently train the default).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

from omniface import contract

DEFAULTS: dict = {
    "seed": 0,
    "data": {
        "root": "",                      # "" -> $OMNIFACE_DATA or <repo>/../shared/data
        "val_fraction": 0.12,
        "split_seed": 0,
        "detection": True,               # train the detector on WIDER FACE
        "attribute_sets": ["utkface", "fer2013", "genki4k"],
        "shares": {"utkface": 0.4, "fer2013": 0.35, "genki4k": 0.25},
        "det_batch": 8,
        "attr_batch": 64,
        "det_size": [640, 480],
        "det_scale": [0.5, 2.0],
        "min_face": 2.0,
        "fill": 0,                        # padding colour: black, as the served letterbox
        "paste": 0.0,                    # probability of pasting single-face crops into a frame
        "paste_max": 3,
        "paste_sets": ["utkface", "genki4k"],
        "workers": 0,
        # "cached": decode once into memory-mapped arrays (data.cache), augment with tensor
        # ops; detection on det_crop crops at det_native_scale (relative to native pixels).
        # "files": decode and warp each sample from its file (the original stream).
        "pipeline": "files",
        "cache": "",                     # "" -> $OMNIFACE_CACHE or <repo>/.cache/data/<hash>
        "det_crop": [320, 320],
        "det_native_scale": [0.3, 1.6],
        "stream_device": "auto",         # cached stream: "auto" (the training device), "cpu"
    },
    "augment": {
        "crop_scale": [0.9, 1.1], "crop_shift": 0.06, "crop_rotate": 10.0, "flip": 0.5,
        "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "grayscale": 0.1,
        "plain_resize": 0.25,            # cached pipeline: plain resize instead of template alignment
        "lowres": 0.15, "lowres_size": [24, 64],
    },
    "model": {"tasks": list(contract.DEFAULT_TASKS), "width": 1.0, "init": "",
              "split_bn": False,         # separate trunk BatchNorm statistics for frames and crops
              "attr_trunk": "shared",    # "separate": crops get their own trunk of attr_width
              "attr_width": 1.5},
    "train": {
        "max_steps": 20000,              # the schedule's length
        "stop_after": 0,                 # >0: stop (checkpoint, exit) once this step is reached
        "time_limit_minutes": 0.0,       # >0: stop (checkpoint, exit) after this much wall time
        "lr": 2e-3,
        "weight_decay": 5e-4,
        "warmup_steps": 500,
        "min_lr_ratio": 0.02,
        "grad_clip": 10.0,
        "device": "cpu",                 # "cpu", "cuda", "auto"
        "threads": 2,
        "checkpoint_minutes": 5.0,
        "log_every": 10,
        "plot_every": 200,
        "amp": "auto",                   # bf16 autocast: "auto" (on CUDA), "bf16", "off"
        "channels_last": "auto",         # channels-last tensors: "auto" (on CUDA), "false"
    },
    "targets": {"topk": 9, "anchor_sizes": [24.0, 90.0, 360.0], "fallback": True},
    "loss": {
        "score": "qfl", "qfl_beta": 2.0, "focal_alpha": 0.25, "focal_gamma": 2.0,
        "box": "giou",
        "landmark": "smooth_l1", "smooth_l1_beta": 0.111, "wing_w": 1.0, "wing_eps": 0.2,
        "coral_reduction": "sum",
        "pose_beta": 1.0,
        "expression_logit_adjust": 0.0,  # tau of logit-adjusted CE (class prior of the training set)
        "expression_label_smoothing": 0.0,
    },
    "weighting": {
        "method": "uncertainty",         # "uncertainty", "mtcp", "fixed"
        "init_log_var": "auto",          # "auto": s_t = log(2 c L_t) on first sight; or a number
        "lr": 0.01,                      # learning rate of the log-variances (0 -> train.lr)
        "mtcp_period": 50,
        "mtcp_clamp": [0.1, 10.0],
        "fixed": {"det_score": 1.0, "det_box": 2.0, "det_landmarks": 0.1, "age": 0.05, "gender": 1.0,
                  "expression": 1.0, "smile": 1.0, "head_pose": 0.05, "glasses": 1.0, "action_units": 1.0},
    },
    "resup": {"enabled": True, "warmup_steps": 0, "em_iters": 100, "min_weight": 0.05},
    "dm": {
        "enabled": True,
        "weight": 0.5,
        "symmetric": False,
        "stop_grad": "none",
        "pairs": [{"a": "expression", "b": "smile", "relation": {"happy": 0.9, "default": 0.07}}],
    },
    "eval": {"score_threshold": 0.02, "nms_iou": 0.4, "max_faces": 200, "batch": 16, "threads": 2,
             "max_images": 0, "max_crops": 0},
}

OPEN_TABLES = {("data", "shares"), ("weighting", "fixed"), ("dm", "pairs")}
"""Tables whose keys are free (data-set names, task names)."""


def merge_sections(base: dict, update: dict, path: tuple = ()) -> dict:
    """Merge a config's tables (a parsed TOML file) into ``base`` in place; an unknown
    key is an error, so a typo in a config never trains silently with the default."""
    for key, value in update.items():
        here = path + (key,)
        if key not in base:
            raise KeyError(f"unknown config key {'.'.join(here)!r}")
        if isinstance(base[key], dict) and isinstance(value, dict) and here not in OPEN_TABLES:
            merge_sections(base[key], value, here)
        else:
            base[key] = value
    return base


def parse_value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_dotted(cfg: dict, key: str, value) -> None:
    parts = key.split(".")
    node = cfg
    for i, p in enumerate(parts[:-1]):
        if p not in node or not isinstance(node[p], dict):
            raise KeyError(f"unknown config key {key!r}")
        node = node[p]
    if parts[-1] not in node and tuple(parts[:-1]) not in OPEN_TABLES:
        raise KeyError(f"unknown config key {key!r}")
    node[parts[-1]] = value


def _load_file(cfg: dict, path: Path, seen: tuple = ()) -> None:
    """Merge a TOML file into ``cfg``; a top-level ``extends = "other.toml"`` (relative to
    the file) is merged first, so ablation configs state only what they change."""
    path = Path(path).resolve()
    if path in seen:
        raise ValueError(f"config {path} extends itself (via {[str(p) for p in seen]})")
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    parent = data.pop("extends", None)
    if parent:
        _load_file(cfg, path.parent / parent, seen + (path,))
    merge_sections(cfg, data)


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> dict:
    """Defaults <- TOML file (and what it ``extends``) <- overrides
    (``["train.max_steps=100", ...]`` or a dict of dotted keys)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        _load_file(cfg, Path(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: dict, overrides: list[str] | dict | None) -> dict:
    """Apply ``--set`` overrides in place (``["train.max_steps=100", ...]``, values read
    as TOML, or a dict of dotted keys) and return ``cfg``; shared by every build script
    that takes ``--set`` (train, resume, evaluate, ablate)."""
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set needs key=value, got {item!r}")
            items.append((key.strip(), parse_value(value.strip())))
    for key, value in items:
        set_dotted(cfg, key, value)
    return cfg


def get(cfg: dict, key: str, default=None):
    node = cfg
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node
