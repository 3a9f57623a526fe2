"""The training data decoded once into uint8 arrays, memory-mapped from a cache folder.

Why: decoding JPEGs is most of what a training step cost (the network's own forward and
backward is a fraction of it on two cores). Each data set is decoded once into a flat
uint8 file plus small index arrays (``numpy.save``), then every run, every loader worker
and every resume maps the same pages (``mmap_mode="r"``) at no decoding cost.

Layout of ``<cache>/<data set>/``:

* ``widerface``: ``pixels.u8`` (every image's H*W*3 bytes, back to back, native size),
  ``offsets.npy`` / ``shapes.npy`` per image, the faces of all images concatenated
  (``boxes.npy [F,4]``, ``landmarks.npy [F,5,2]``, ``landmark_valid.npy [F]``) with
  ``face_start.npy [N+1]``, and ``names.json`` (the split key of each image);
* an attribute set: ``images.npy [N,S,S,C]`` (UTKFace resized to ``UTK_SIZE``, FER2013 as
  its 48x48 grey, GENKI-4K as its 64x64 RGB), its labels (``age.npy``, ``gender.npy``,
  ``expression.npy``, ``smile.npy``, ``head_pose.npy``) and ``names.json``.

The cache holds every image of the folder (the "all" split); ``subset`` picks a split by
the same name hash as the file loaders, so a cache never mixes validation into training.
A ``manifest.json`` records the source folder, its file count and ``CACHE_VERSION``; a
cache whose manifest does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .faces import DATASET_TASKS, load_faces
from .paths import REPO_ROOT, data_root, in_split
from .widerface import load_widerface

CACHE_VERSION = 1
UTK_SIZE = 128
"""UTKFace's 200x200 chips are stored at 128x128: the template's eye distance (35 px of
112) is ~51 px there, so the 112 crops are still downsampled, never upsampled."""

ATTRIBUTE_LABELS: dict[str, tuple[str, ...]] = DATASET_TASKS


def default_cache_dir(root: str | os.PathLike | None = None) -> Path:
    """``$OMNIFACE_CACHE`` or ``<repo>/.cache/data/<hash of the data root>``."""
    base = os.environ.get("OMNIFACE_CACHE")
    if base:
        return Path(base)
    key = hashlib.sha1(str(data_root(root).resolve()).encode()).hexdigest()[:10]
    return REPO_ROOT / ".cache" / "data" / key


def _manifest(source: Path, files: int) -> dict:
    return {"version": CACHE_VERSION, "source": str(source.resolve()), "files": int(files)}


def _fresh(folder: Path, manifest: dict) -> bool:
    path = folder / "manifest.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()) == manifest
    except (OSError, ValueError):
        return False


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)


# ------------------------------------------------------------------------------ WIDER FACE


@dataclass
class WiderCache:
    """Memory-mapped WIDER FACE images at native size with their faces."""

    pixels: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    landmark_valid: np.ndarray
    face_start: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as a read-only uint8 ``[H, W, 3]`` view of the mapped file."""
        h, w = (int(v) for v in self.shapes[i])
        o = int(self.offsets[i])
        return self.pixels[o:o + h * w * 3].reshape(h, w, 3)

    def faces(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.face_start[i]), int(self.face_start[i + 1])
        return self.boxes[a:b], self.landmarks[a:b], self.landmark_valid[a:b]

    def subset(self, split: str, val_fraction: float, seed: int) -> np.ndarray:
        """Indices of the images in ``split`` (the file loader's name hash)."""
        return np.array([i for i, n in enumerate(self.names) if in_split(n, split, val_fraction, seed)], np.int64)


def build_wider(root: Path, folder: Path, quiet: bool = False) -> None:
    images = load_widerface(root, "all")
    manifest = _manifest(root, len(images))
    if _fresh(folder, manifest):
        return
    folder.mkdir(parents=True, exist_ok=True)
    shapes = np.zeros((len(images), 2), np.int64)
    offsets = np.zeros(len(images), np.int64)
    face_start = np.zeros(len(images) + 1, np.int64)
    pos = 0
    bar = _progress(len(images), "cache widerface", quiet)
    with open(folder / "pixels.u8.tmp", "wb") as fh:
        for i, rec in enumerate(images):
            with Image.open(rec.path) as im:
                rgb = np.asarray(im.convert("RGB"))
            shapes[i] = rgb.shape[:2]
            offsets[i] = pos
            fh.write(np.ascontiguousarray(rgb).tobytes())
            pos += rgb.size
            face_start[i + 1] = face_start[i] + len(rec.boxes)
            bar.update(1)
    bar.close()
    os.replace(folder / "pixels.u8.tmp", folder / "pixels.u8")
    np.save(folder / "shapes.npy", shapes)
    np.save(folder / "offsets.npy", offsets)
    np.save(folder / "face_start.npy", face_start)
    np.save(folder / "boxes.npy", np.concatenate([r.boxes for r in images]).astype(np.float32))
    np.save(folder / "landmarks.npy", np.concatenate([r.landmarks for r in images]).astype(np.float32))
    np.save(folder / "landmark_valid.npy", np.concatenate([r.landmark_valid for r in images]).astype(bool))
    (folder / "names.json").write_text(json.dumps([r.name for r in images]))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def open_wider(folder: Path) -> WiderCache:
    return WiderCache(
        pixels=np.memmap(folder / "pixels.u8", dtype=np.uint8, mode="r"),
        offsets=np.load(folder / "offsets.npy"), shapes=np.load(folder / "shapes.npy"),
        boxes=np.load(folder / "boxes.npy"), landmarks=np.load(folder / "landmarks.npy"),
        landmark_valid=np.load(folder / "landmark_valid.npy"), face_start=np.load(folder / "face_start.npy"),
        names=json.loads((folder / "names.json").read_text()),
    )


# ------------------------------------------------------------------------------ face crops


@dataclass
class FaceCache:
    """Memory-mapped crops of one attribute data set and their labels."""

    dataset: str
    images: np.ndarray
    """uint8 ``[N, S, S, C]`` (C = 1 for FER2013's grey, else 3)."""
    labels: dict[str, np.ndarray]
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, split: str, val_fraction: float, seed: int) -> np.ndarray:
        return np.array([i for i, n in enumerate(self.names) if in_split(n, split, val_fraction, seed)], np.int64)


def build_faces(dataset: str, root: Path, folder: Path, quiet: bool = False) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # malformed names: the file loader warns in every run already
        records = load_faces(dataset, root, "all")
    manifest = _manifest(root, len(records))
    if _fresh(folder, manifest):
        return
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(records[0].path) as im:
        w, h = im.size
        grey = im.mode == "L"
    size = UTK_SIZE if dataset == "utkface" else w
    channels = 1 if grey else 3
    images = np.lib.format.open_memmap(folder / "images.npy.tmp.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(records), size, size, channels))
    bar = _progress(len(records), f"cache {dataset}", quiet)
    for i, rec in enumerate(records):
        with Image.open(rec.path) as im:
            im = im.convert("L" if grey else "RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
            a = np.asarray(im)
        images[i] = a.reshape(size, size, channels)
        bar.update(1)
    bar.close()
    images.flush()
    del images
    os.replace(folder / "images.npy.tmp.npy", folder / "images.npy")
    for task in ATTRIBUTE_LABELS[dataset]:
        values = np.stack([np.asarray(r.labels[task]) for r in records])
        np.save(folder / f"{task}.npy", values.astype(np.int64 if task == "expression" else np.float32))
    (folder / "names.json").write_text(json.dumps([r.name for r in records]))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def open_faces(dataset: str, folder: Path) -> FaceCache:
    labels = {t: np.load(folder / f"{t}.npy") for t in ATTRIBUTE_LABELS[dataset]}
    return FaceCache(dataset, np.load(folder / "images.npy", mmap_mode="r"), labels,
                     json.loads((folder / "names.json").read_text()))


def ensure_cache(root: str | os.PathLike | None, datasets: list[str], cache: str | os.PathLike | None = None,
                 quiet: bool = False) -> Path:
    """Build (once) and return the cache folder holding ``datasets`` of the data root."""
    root = data_root(root)
    out = Path(cache) if cache else default_cache_dir(root)
    for name in datasets:
        if name == "widerface":
            build_wider(root / "widerface", out / "widerface", quiet)
        else:
            build_faces(name, root / name, out / name, quiet)
    return out
