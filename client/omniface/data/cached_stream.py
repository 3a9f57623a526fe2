"""The fast training stream: batches cut from the decoded cache with tensor operations.

``CachedStream[step]`` returns the same batch layout as ``omniface.data.mixed.TrainStream``
(one detection batch, one mixed attribute batch, labels and masks) but built without
decoding a file or warping an image in Python per pixel:

* images come from the memory-mapped cache (``omniface.data.cache``);
* every geometric augmentation is one affine map per sample, applied with
  ``torch.nn.functional.grid_sample`` (a batch of attribute crops in one call, one call
  per detection frame); colour jitter is vectorised over the batch;
* the same code runs on CUDA: with ``device="cuda"`` the cache is copied into GPU memory
  once and batches are cut and augmented there.

Detection is trained on random crops (``det_crop``, e.g. 320x320) of WIDER frames kept
near their native scale (``det_scale`` is relative to native pixels, log-uniform), so the
fully convolutional detector learns the face sizes it sees when served at the frame's
own resolution, and a batch costs a fraction of a whole letterboxed frame. A downscale
by more than 2x first box-averages by the integer factor (as the served letterbox does,
``processing.image.DETECTOR_REDUCING_GAP``), so shrunken frames are not aliased.

Attribute crops follow the served alignment (each data set's mean-face similarity to the
112 template, ``faces.crop_to_template``), with probability ``plain_resize`` replaced by a
plain resize of the whole crop (what ``Client.analyze_faces`` does with a crop of any
size), then jittered (scale, rotation, shift, flip), optionally degraded to a lower
resolution (``lowres``) and colour-jittered.

Like ``TrainStream``, step ``i``'s batch is a pure function of ``(seed, i)``: every draw
comes from ``numpy.random.default_rng([seed, i, data set id, slot])``, so a resumed run
sees exactly the batches a straight run would. (A loader worker runs torch on one
thread; its pixels can differ from the main process's by a float rounding, its draws and
labels never, so keep ``data.workers`` when resuming for bit-exact runs.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniface import contract
from omniface.errors import require

from . import geometry as geo
from .cache import FaceCache, WiderCache, open_faces, open_wider
from .faces import SOURCE_FACE_POINTS, crop_to_template
from .mixed import LABEL_SHAPES, Walk, dataset_id, split_counts

torch = require("torch", "train")
F = torch.nn.functional

GREY = (0.299, 0.587, 0.114)


@dataclass
class DetCropConfig:
    batch: int = 12
    crop: tuple[int, int] = (320, 320)
    """(width, height) of a training crop; multiples of 32."""
    scale: tuple[float, float] = (0.3, 1.6)
    """Zoom relative to the frame's native pixels, log-uniform."""
    min_face: float = 2.0
    flip: float = 0.5
    tries: int = 10


@dataclass
class CropConfig:
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06
    rotate: float = 10.0
    flip: float = 0.5
    plain_resize: float = 0.25
    """Probability of a plain resize of the source crop instead of the template alignment."""
    lowres: float = 0.15
    """Probability of degrading a crop to a random lower resolution (``lowres_size``)."""
    lowres_size: tuple[int, int] = (24, 64)


@dataclass
class ColourConfig:
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    grayscale: float = 0.1


@dataclass
class StreamConfig:
    det: DetCropConfig = field(default_factory=DetCropConfig)
    crops: CropConfig = field(default_factory=CropConfig)
    colour: ColourConfig = field(default_factory=ColourConfig)
    attr_batch: int = 96
    shares: dict = field(default_factory=lambda: {"utkface": 0.4, "fer2013": 0.35, "genki4k": 0.25})
    tasks: tuple[str, ...] = contract.DEFAULT_TASKS
    seed: int = 0
    val_fraction: float = 0.12
    split_seed: int = 0
    split: str = "train"


def _normalisers(width: int, height: int) -> np.ndarray:
    """3x3 map from continuous pixel coordinates (pixel i covers [i, i+1)) to
    ``grid_sample``'s [-1, 1] coordinates with ``align_corners=False``."""
    return np.array([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]])


def affine_thetas(dst_to_src: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """``[N,2,3]`` pixel maps destination -> source as ``affine_grid`` thetas."""
    n_src = _normalisers(*src_size)
    n_dst_inv = np.linalg.inv(_normalisers(*dst_size))
    full = np.concatenate([dst_to_src, np.tile([[[0.0, 0.0, 1.0]]], (len(dst_to_src), 1, 1))], axis=1)
    return (n_src @ full @ n_dst_inv)[:, :2]


def colour_jitter(x, rng: np.random.Generator, cfg: ColourConfig, normalise: bool = True):
    """Brightness, contrast, saturation (in that order) and random greyscale on float
    ``[N,3,H,W]`` in 0..255, as one per-sample 3x3 colour matrix plus offset (a single
    pass over the pixels), clamped to 0..255; ``normalise`` then applies the graphs'
    ``(x - PIXEL_MEAN) * PIXEL_SCALE`` in place."""
    n = x.shape[0]
    w = np.asarray(GREY, np.float64)
    b = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness, n) if cfg.brightness > 0 else np.ones(n)
    c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast, n) if cfg.contrast > 0 else np.ones(n)
    s = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation, n) if cfg.saturation > 0 else np.ones(n)
    grey = rng.random(n) < cfg.grayscale if cfg.grayscale > 0 else np.zeros(n, bool)
    eye, ones_w = np.eye(3), np.outer(np.ones(3), w)
    sat = s[:, None, None] * eye + (1 - s)[:, None, None] * ones_w          # x -> (x - g) s + g
    mats = np.where(grey[:, None, None], ones_w @ sat, sat)                  # then greyscale
    # brightness then contrast: x2 = c b x + (1 - c) b mean(x); the offset goes through mats.
    # A float64 sum: the same mean whatever the thread count (so a loader worker, with
    # one thread, cuts the very batch the main process would).
    mean = (x.sum(dim=(1, 2, 3), dtype=torch.float64) / (x[0].numel())).cpu().numpy()
    lin = mats * (c * b)[:, None, None]
    off = (mats @ np.ones(3)) * ((1 - c) * b * mean)[:, None]
    lin_t = torch.as_tensor(lin, dtype=x.dtype, device=x.device)
    off_t = torch.as_tensor(off, dtype=x.dtype, device=x.device)
    out = torch.einsum("nij,njhw->nihw", lin_t, x).add_(off_t[:, :, None, None]).clamp_(0, 255)
    if normalise:
        out.sub_(contract.PIXEL_MEAN).mul_(contract.PIXEL_SCALE)
    return out


def normalise_float(x):
    return (x - contract.PIXEL_MEAN) * contract.PIXEL_SCALE


class CachedStream:
    """Map-style stream over the decoded cache; ``stream[step]`` is the step's batch.

    The cache is opened lazily in each process (a DataLoader worker maps the files
    itself instead of receiving pickled arrays)."""

    def __init__(self, cache_dir: str | Path, cfg: StreamConfig, detection: bool = True,
                 attribute_sets: tuple[str, ...] = ("utkface", "fer2013", "genki4k"), device: str = "cpu",
                 length: int = 10**9):
        self.cache_dir = Path(cache_dir)
        self.cfg = cfg
        self.tasks = tuple(cfg.tasks)
        self.seed = int(cfg.seed)
        self.device = torch.device(device)
        self.length = int(length)
        self.detection = bool(detection)
        self.attribute_sets = tuple(attribute_sets)
        self._opened = False
        self._open()
        kw = (cfg.split, cfg.val_fraction, cfg.split_seed)
        self.det_index = self.wider.subset(*kw) if self.detection else np.zeros(0, np.int64)
        self.face_index = {name: c.subset(*kw) for name, c in self.face_caches.items()}
        self.face_index = {k: v for k, v in self.face_index.items() if len(v)}
        self.det_walk = Walk("widerface", len(self.det_index), cfg.det.batch if len(self.det_index) else 0, self.seed)
        counts = split_counts(cfg.attr_batch, {k: cfg.shares.get(k, 0.0) for k in self.face_index})
        self.walks = {k: Walk(k, len(self.face_index[k]), c, self.seed) for k, c in counts.items() if c > 0}
        # What the trainer reads of a stream: per data set, its training items (ReSup
        # sizes its per-sample memory by them; only the length and labels are used).
        self.faces = {k: FaceLabels(self.face_caches[k], self.face_index[k]) for k in self.walks}

    # -------------------------------------------------------------- process-local state

    def _open(self) -> None:
        self.wider: WiderCache | None = open_wider(self.cache_dir / "widerface") if self.detection else None
        self.face_caches: dict[str, FaceCache] = {n: open_faces(n, self.cache_dir / n) for n in self.attribute_sets}
        self._gpu: dict = {}
        if self.device.type != "cpu":
            if self.wider is not None:
                self._gpu["wider"] = torch.from_numpy(np.ascontiguousarray(self.wider.pixels)).to(self.device)
            for n, c in self.face_caches.items():
                self._gpu[n] = torch.from_numpy(np.ascontiguousarray(c.images)).to(self.device)
        self._opened = True

    def __getstate__(self):
        state = dict(self.__dict__)
        for k in ("wider", "face_caches", "_gpu"):
            state.pop(k, None)
        state["_opened"] = False
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.length

    def epochs(self, step: int) -> dict[str, int]:
        out = {name: w.epoch_of(step) for name, w in self.walks.items()}
        if self.det_walk.per_step:
            out["widerface"] = self.det_walk.epoch_of(step)
        return out

    def __getitem__(self, step: int) -> dict:
        if not self._opened:
            self._open()
        step = int(step)
        batch: dict = {"step": step, "det": None, "attr": None}
        with torch.no_grad():
            if self.det_walk.per_step:
                batch["det"] = self.detection_batch(step)
            if self.walks:
                batch["attr"] = self.attribute_batch(step)
        return batch

    # -------------------------------------------------------------- attribute crops

    def _face_images(self, name: str, idx: np.ndarray):
        if name in self._gpu:
            return self._gpu[name][torch.as_tensor(idx, device=self.device)]
        return torch.from_numpy(np.ascontiguousarray(self.face_caches[name].images[np.sort(idx)][np.argsort(np.argsort(idx))]))

    def crop_transforms(self, name: str, n: int, src: int, rng: np.random.Generator):
        """``n`` source -> crop maps (2x3) for a ``src``-square crop of data set ``name``,
        and per sample (flipped, rotation angle)."""
        c = self.cfg.crops
        size = contract.CROP_SIZE
        template = crop_to_template(name, src, src) if name in SOURCE_FACE_POINTS else geo.similarity(size / src)
        plain = geo.similarity(size / src)
        use_plain = rng.random(n) < c.plain_resize
        flips = rng.random(n) < c.flip
        scales = np.exp(rng.uniform(np.log(c.scale[0]), np.log(c.scale[1]), n))
        angles = rng.uniform(-c.rotate, c.rotate, n)
        shifts = rng.uniform(-c.shift, c.shift, (n, 2)) * size
        maps = np.zeros((n, 2, 3))
        for i in range(n):
            a = plain if use_plain[i] else template
            if flips[i]:
                a = geo.compose(geo.hflip(size), a)
            jitter = geo.similarity(float(scales[i]), float(angles[i]), float(shifts[i, 0]), float(shifts[i, 1]),
                                    centre=(size / 2, size / 2))
            maps[i] = geo.compose(jitter, a)
        return maps, flips, angles

    def attribute_batch(self, step: int) -> dict:
        size = contract.CROP_SIZE
        parts, labels_out, names, index = [], {t: [] for t in self.tasks}, [], []
        masks = {t: [] for t in self.tasks}
        for name, walk in self.walks.items():
            picked = np.array([i for i, _ in walk.indices(step)], np.int64)
            rng = np.random.default_rng([self.seed, step, dataset_id(name), 1])
            cache = self.face_caches[name]
            gidx = self.face_index[name][picked]
            imgs = self._face_images(name, gidx).to(self.device)
            n, src = imgs.shape[0], imgs.shape[1]
            maps, flips, angles = self.crop_transforms(name, n, src, rng)
            inv = np.stack([geo.invert(m) for m in maps])
            theta = torch.as_tensor(affine_thetas(inv, (src, src), (size, size)), dtype=torch.float32, device=self.device)
            x = imgs.permute(0, 3, 1, 2).float()
            grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1).contiguous()
            x = self._lowres(x, rng)
            parts.append(x)
            for t in self.tasks:
                shape, dtype = LABEL_SHAPES[t]
                if t in cache.labels:
                    v = torch.as_tensor(np.asarray(cache.labels[t][gidx]), dtype=dtype).clone()
                    if t == "head_pose":  # mirror first (yaw, roll change sign), then the rotation
                        f = torch.as_tensor(flips)
                        v[f, 0] = -v[f, 0]
                        v[f, 2] = -v[f, 2]
                        v[:, 2] -= torch.as_tensor(angles, dtype=torch.float32)
                    labels_out[t].append(v)
                    masks[t].append(torch.ones(n, dtype=torch.bool))
                else:
                    labels_out[t].append(torch.zeros((n, *shape), dtype=dtype))
                    masks[t].append(torch.zeros(n, dtype=torch.bool))
            names += [name] * n
            index.append(torch.as_tensor(picked))
        x = torch.cat(parts)
        rng = np.random.default_rng([self.seed, step, 99, 2])
        x = colour_jitter(x, rng, self.cfg.colour)
        return {
            "x": x,
            "labels": {t: torch.cat(v) for t, v in labels_out.items()},
            "mask": {t: torch.cat(v) for t, v in masks.items()},
            "dataset": names,
            "index": torch.cat(index),
        }

    def _lowres(self, x, rng: np.random.Generator):
        c = self.cfg.crops
        if c.lowres <= 0:
            return x
        which = np.nonzero(rng.random(x.shape[0]) < c.lowres)[0]
        sizes = rng.integers(c.lowres_size[0], c.lowres_size[1] + 1, len(which))
        for i, s in zip(which, sizes):
            small = F.interpolate(x[i:i + 1], size=(int(s), int(s)), mode="area")
            x[i:i + 1] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x

    # -------------------------------------------------------------- detection crops

    def _wider_image(self, i: int):
        """Image ``i`` as a uint8 ``[H, W, 3]`` array (CPU) or tensor (GPU)."""
        h, w = (int(v) for v in self.wider.shapes[i])
        if "wider" in self._gpu:
            o = int(self.wider.offsets[i])
            return self._gpu["wider"][o:o + h * w * 3].view(h, w, 3)
        return self.wider.image(i)

    def frame_transform(self, rng: np.random.Generator, width: int, height: int, boxes: np.ndarray) -> np.ndarray:
        """A random native-relative zoom and crop/pad (2x3, source -> crop), retried until
        a face centre lands in the crop."""
        d = self.cfg.det
        out_w, out_h = d.crop
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 if len(boxes) else np.zeros((0, 2))
        a = None
        for _ in range(max(1, d.tries)):
            s = float(np.exp(rng.uniform(np.log(d.scale[0]), np.log(d.scale[1]))))
            t = []
            for size, out in ((width * s, out_w), (height * s, out_h)):
                t.append(-rng.uniform(0, size - out) if size > out else rng.uniform(0, out - size))
            a = np.array([[s, 0.0, t[0]], [0.0, s, t[1]]])
            if not len(centres):
                break
            c = geo.apply_points(a, centres)
            if ((c[:, 0] >= 0) & (c[:, 0] < out_w) & (c[:, 1] >= 0) & (c[:, 1] < out_h)).any():
                break
        return a

    def render_crop(self, image, a: np.ndarray, out_size: tuple[int, int]):
        """Warp ``image`` (uint8 [H,W,3]) by the scale+translation(+flip) ``a`` into a
        float [3, H, W] crop, reading only the source rows and columns it needs and
        box-averaging by the integer part of a downscale first."""
        out_w, out_h = out_size
        h, w = image.shape[:2]
        inv = geo.invert(a)
        corners = geo.apply_points(inv, np.array([[0, 0], [out_w, 0], [0, out_h], [out_w, out_h]], np.float64))
        scale = abs(a[0, 0])
        r = max(1, min(8, int(1.0 / scale))) if scale < 1.0 else 1
        x0 = max(0, int(math.floor(corners[:, 0].min())) - 1)
        y0 = max(0, int(math.floor(corners[:, 1].min())) - 1)
        x1 = min(w, int(math.ceil(corners[:, 0].max())) + 1)
        y1 = min(h, int(math.ceil(corners[:, 1].max())) + 1)
        x0, y0 = x0 // r * r, y0 // r * r
        x1 = x0 + max(r, (x1 - x0) // r * r)
        y1 = y0 + max(r, (y1 - y0) // r * r)
        x1, y1 = min(x1, w // r * r), min(y1, h // r * r)
        if x1 <= x0 or y1 <= y0:
            return torch.zeros((3, out_h, out_w), device=self.device)
        patch = image[y0:y1, x0:x1]
        if isinstance(patch, np.ndarray):
            patch = torch.from_numpy(np.ascontiguousarray(patch))
        p = patch.to(self.device).permute(2, 0, 1).float()[None]
        if r > 1:
            p = F.avg_pool2d(p, r)
        # patch pixel coordinates (reduced) -> source: x = x0 + r * u
        to_src = np.array([[r, 0.0, x0], [0.0, r, y0]], np.float64)
        dst_to_patch = geo.compose(geo.invert(to_src), inv)
        theta = affine_thetas(dst_to_patch[None], (p.shape[3], p.shape[2]), (out_w, out_h))
        grid = F.affine_grid(torch.as_tensor(theta, dtype=torch.float32, device=self.device), [1, 3, out_h, out_w],
                             align_corners=False)
        return F.grid_sample(p, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]

    def detection_batch(self, step: int) -> dict:
        d = self.cfg.det
        out_w, out_h = d.crop
        frames, boxes_out, lms_out, valid_out = [], [], [], []
        for j, (pos, _) in enumerate(self.det_walk.indices(step)):
            i = int(self.det_index[pos])
            rng = np.random.default_rng([self.seed, step, dataset_id("widerface"), j])
            h, w = (int(v) for v in self.wider.shapes[i])
            boxes, lms, valid = self.wider.faces(i)
            a = self.frame_transform(rng, w, h, boxes)
            flip = rng.random() < d.flip
            if flip:
                a = geo.compose(geo.hflip(out_w), a)
            frames.append(self.render_crop(self._wider_image(i), a, (out_w, out_h)))
            b = geo.apply_boxes(a, boxes)
            pts = geo.apply_points(a, lms)
            if flip and len(pts):
                pts = pts[:, list(contract.LANDMARK_FLIP_ORDER), :]
            b, pts, v = _filter_faces(b, pts, valid.copy(), out_w, out_h, d.min_face)
            boxes_out.append(torch.from_numpy(b.astype(np.float32).reshape(-1, 4)))
            lms_out.append(torch.from_numpy(pts.astype(np.float32).reshape(-1, 5, 2)))
            valid_out.append(torch.from_numpy(v.astype(bool)))
        x = torch.stack(frames)
        rng = np.random.default_rng([self.seed, step, dataset_id("widerface"), 10**6])
        x = colour_jitter(x, rng, self.cfg.colour)
        return {"x": x, "boxes": boxes_out, "landmarks": lms_out, "landmark_valid": valid_out}


def _filter_faces(boxes, landmarks, valid, width, height, min_face):
    from .detection import filter_faces

    return filter_faces(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(landmarks, np.float64).reshape(-1, 5, 2),
                        np.asarray(valid, bool), width, height, min_face)


class FaceLabels:
    """The training items of one cached attribute set, as the trainer sees them:
    ``len()`` and ``[i].labels`` (like a list of ``FaceRecord``)."""

    def __init__(self, cache: FaceCache, index: np.ndarray):
        self.cache, self.index = cache, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        return _Item({t: v[j] for t, v in self.cache.labels.items()})

    def __bool__(self) -> bool:
        return len(self.index) > 0


@dataclass
class _Item:
    labels: dict
