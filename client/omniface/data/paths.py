"""Where the training data lives, and the deterministic train/val split.

The data root is a setting: ``OMNIFACE_DATA`` (environment) or a config's ``data.root``;
by default ``../shared/data`` next to the repository. Each data set keeps its published
layout under the root (``widerface/``, ``utkface/``, ``fer2013/``, ``genki4k/``).

The held-out validation split is a pure function of the file name: a sample is in
``val`` when ``sha1(f"{seed}:{name}")`` read as a number in [0, 1) is below the
fraction. It never changes with the order of a directory listing, with the machine or
with which other files exist, so a sample is never trained on in one run and evaluated
in another.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"

SPLITS = ("train", "val", "all")
VAL_FRACTION_DEFAULT = 0.12
SPLIT_SEED_DEFAULT = 0


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given (non-empty), else ``$OMNIFACE_DATA``, else
    ``<repo>/../shared/data``. Relative paths are taken from the repository root."""
    value = root if root not in (None, "") else os.environ.get("OMNIFACE_DATA") or DEFAULT_DATA_ROOT
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def split_value(name: str, seed: int = SPLIT_SEED_DEFAULT) -> float:
    """A number in [0, 1) fixed by ``name`` and ``seed`` (first 8 bytes of SHA-1)."""
    digest = hashlib.sha1(f"{seed}:{name}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def in_split(name: str, split: str, fraction: float = VAL_FRACTION_DEFAULT, seed: int = SPLIT_SEED_DEFAULT) -> bool:
    """Whether the sample called ``name`` belongs to ``split`` ("train", "val" or "all")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return True
    is_val = split_value(name, seed) < fraction
    return is_val if split == "val" else not is_val
