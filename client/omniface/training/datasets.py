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


def build_stream(cfg: dict, split: str = "train", device: str = "cpu", quiet: bool = False):
    """The training stream a config describes: ``TrainStream`` (``data.pipeline =
    "files"``) or ``CachedStream`` (``"cached"``; the cache is built on first use)."""
    if cfg["data"].get("pipeline", "files") == "cached":
        return cached_stream(cfg, split, device, quiet)
    wider, faces = load_sets(cfg, split)
    d = cfg["data"]
    pool = [r for name in d["paste_sets"] for r in faces.get(name, [])] if d["paste"] > 0 else None
    return TrainStream(wider, faces, det_batch=d["det_batch"], attr_batch=d["attr_batch"], shares=d["shares"],
                       tasks=cfg["model"]["tasks"], seed=cfg["seed"], det_aug=detection_augment(cfg),
                       crop_aug=crop_augment(cfg), paste_pool=pool)


def cached_stream(cfg: dict, split: str = "train", device: str = "cpu", quiet: bool = False):
    from omniface.data.cache import ensure_cache
    from omniface.data.cached_stream import CachedStream, ColourConfig, CropConfig, DetCropConfig, StreamConfig

    d, a = cfg["data"], cfg["augment"]
    tasks = set(cfg["model"]["tasks"])
    sets = [n for n in d["attribute_sets"] if not DATASET_TASKS.get(n) or tasks & set(DATASET_TASKS[n])]
    folder = ensure_cache(d["root"], (["widerface"] if d["detection"] else []) + sets, d.get("cache") or None, quiet)
    sc = StreamConfig(
        det=DetCropConfig(batch=int(d["det_batch"]), crop=tuple(d["det_crop"]), scale=tuple(d["det_native_scale"]),
                          min_face=float(d["min_face"]), flip=float(a["flip"])),
        crops=CropConfig(scale=tuple(a["crop_scale"]), shift=float(a["crop_shift"]), rotate=float(a["crop_rotate"]),
                         flip=float(a["flip"]), plain_resize=float(a["plain_resize"]), lowres=float(a["lowres"]),
                         lowres_size=tuple(a["lowres_size"])),
        colour=ColourConfig(a["brightness"], a["contrast"], a["saturation"], a["grayscale"]),
        attr_batch=int(d["attr_batch"]), shares=dict(d["shares"]), tasks=tuple(cfg["model"]["tasks"]),
        seed=int(cfg["seed"]), val_fraction=float(d["val_fraction"]), split_seed=int(d["split_seed"]), split=split,
    )
    return CachedStream(folder, sc, detection=bool(d["detection"]), attribute_sets=tuple(sets), device=device)
