"""The multi-task network (needs the ``train`` extra: torch).

``OmniFaceNet`` is one trunk shared by the anchor-free detector and the attribute heads;
``coral_age`` decodes the ordinal age head; ``save_checkpoint`` / ``load_model`` read and
write ``{"model": state_dict, "config": {...}}`` checkpoints.
"""

from .model import (
    DETECT_OUTPUT_KEYS,
    TASK_OUTPUT_KEYS,
    OmniFaceNet,
    build_model,
    coral_age,
    count_macs,
    level_shapes,
    load_model,
    save_checkpoint,
)

__all__ = [
    "DETECT_OUTPUT_KEYS",
    "TASK_OUTPUT_KEYS",
    "OmniFaceNet",
    "build_model",
    "coral_age",
    "count_macs",
    "level_shapes",
    "load_model",
    "save_checkpoint",
]
