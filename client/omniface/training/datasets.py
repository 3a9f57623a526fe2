"""Config -> data: the training stream and the held-out sets a config describes."""

from __future__ import annotations

from omniface.data import DATASET_TASKS, ColourJitter, CropAugment, DetectionAugment, data_root, load_faces, load_widerface
from omniface.data.mixed import TrainStream


def crop_augment(cfg: dict) -> CropAugment:
    a = cfg["augment"]
    return CropAugment(scale=tuple(a["crop_scale"]), shift=a["crop_shift"], rotate=a["crop_rotate"], flip=a["flip"],
                       colour=ColourJitter(a["brightness"], a["contrast"], a["saturation"], a["grayscale"]))


def detection_augment(cfg: dict) -> DetectionAugment:
    d, a = cfg["data"], cfg["augment"]
    return DetectionAugment(size=tuple(d["det_size"]), scale=tuple(d["det_scale"]), flip=a["flip"],
                            min_face=d["min_face"], fill=d["fill"], paste=d["paste"], paste_max=d["paste_max"],
                            colour=ColourJitter(a["brightness"], a["contrast"], a["saturation"], a["grayscale"]))


def load_sets(cfg: dict, split: str = "train"):
    """(WIDER images or None, {attribute data set: records}) for ``split``; data sets
    whose tasks the model does not have are left out."""
    d = cfg["data"]
    root = data_root(d["root"])
    kw = {"val_fraction": d["val_fraction"], "seed": d["split_seed"]}
    wider = load_widerface(root / "widerface", split, **kw) if d["detection"] else None
    tasks = set(cfg["model"]["tasks"])
    faces = {}
    for name in d["attribute_sets"]:
        if DATASET_TASKS.get(name) and not tasks & set(DATASET_TASKS[name]):
            continue
        faces[name] = load_faces(name, root / name, split, **kw)
    return wider, faces


def build_stream(cfg: dict, split: str = "train") -> TrainStream:
    wider, faces = load_sets(cfg, split)
    d = cfg["data"]
    pool = [r for name in d["paste_sets"] for r in faces.get(name, [])] if d["paste"] > 0 else None
    return TrainStream(wider, faces, det_batch=d["det_batch"], attr_batch=d["attr_batch"], shares=d["shares"],
                       tasks=cfg["model"]["tasks"], seed=cfg["seed"], det_aug=detection_augment(cfg),
                       crop_aug=crop_augment(cfg), paste_pool=pool)
