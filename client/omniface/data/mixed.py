"""The training stream: step ``i`` -> one detection batch and one attribute batch.

Every step's content is a pure function of ``(seed, step)``:

* each data set is walked in epochs; epoch ``e`` visits a permutation drawn from
  ``default_rng([seed, data set id, e])``, and step ``i`` takes the ``k`` samples at
  global positions ``i*k .. i*k + k - 1`` of that walk (``k`` = the data set's share of the
  batch);
* each sample's augmentation draws from ``default_rng([seed, step, data set id, slot])``.

So the stream needs no state beyond the step number: a run resumed at step ``i`` sees
exactly the batches a straight run would, whatever the number of loader workers.

The attribute batch mixes the attribute data sets in fixed proportions (largest
remainder rounding of ``batch * share``); each sample carries the labels of its own data
set and a per-task mask saying which labels are present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from omniface import contract
from omniface.errors import require

from .augment import CropAugment, crop_sample
from .detection import DetectionAugment, detection_sample
from .faces import SOURCE_FACE_POINTS, FaceRecord, crop_to_template
from .geometry import similarity
from .widerface import WiderImage

torch = require("torch", "train")

DATASET_IDS = {"widerface": 0, "utkface": 1, "fer2013": 2, "genki4k": 3}


def dataset_id(name: str) -> int:
    """A stable small integer per data set name (unknown names hash to >= 100)."""
    if name in DATASET_IDS:
        return DATASET_IDS[name]
    return 100 + int.from_bytes(name.encode()[:6].ljust(6, b"\0"), "big") % 10_000


LABEL_SHAPES: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
    "age": ((), torch.float32),
    "gender": ((), torch.float32),
    "expression": ((), torch.int64),
    "smile": ((), torch.float32),
    "head_pose": ((len(contract.HEAD_POSE_ANGLES),), torch.float32),
    "glasses": ((), torch.float32),
    "action_units": ((len(contract.ACTION_UNITS),), torch.float32),
}


def split_counts(total: int, shares: dict[str, float]) -> dict[str, int]:
    """``total`` split by ``shares`` with largest-remainder rounding (ties: name order)."""
    shares = {k: float(v) for k, v in shares.items() if v > 0}
    if not shares or total <= 0:
        return {k: 0 for k in shares}
    s = sum(shares.values())
    raw = {k: total * v / s for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = total - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:rest]:
        counts[k] += 1
    return counts


def base_transform(rec: FaceRecord, width: int, height: int) -> np.ndarray:
    """The crop's fixed similarity to the template; a data set without measured face
    points is taken as already template-aligned (just scaled to 112)."""
    if rec.dataset in SOURCE_FACE_POINTS:
        return crop_to_template(rec.dataset, width, height)
    return similarity(contract.CROP_SIZE / width) if width == height else np.array(
        [[contract.CROP_SIZE / width, 0, 0], [0, contract.CROP_SIZE / height, 0]], np.float64)


def attribute_batch(samples: list[tuple[FaceRecord, int]], tasks, rngs, aug: CropAugment | None) -> dict:
    """Crops, labels and masks for ``[(record, index in its data set)]``."""
    n = len(samples)
    images = np.zeros((n, contract.CROP_SIZE, contract.CROP_SIZE, 3), np.uint8)
    labels = {t: torch.zeros((n, *LABEL_SHAPES[t][0]), dtype=LABEL_SHAPES[t][1]) for t in tasks}
    mask = {t: torch.zeros(n, dtype=torch.bool) for t in tasks}
    for i, ((rec, _), rng) in enumerate(zip(samples, rngs)):
        with Image.open(rec.path) as im:
            im = im.convert("RGB")
            images[i], lab = crop_sample(im, base_transform(rec, *im.size), rec.labels, rng, aug)
        for t in tasks:
            if t in lab:
                labels[t][i] = torch.as_tensor(np.asarray(lab[t]), dtype=LABEL_SHAPES[t][1])
                mask[t][i] = True
    return {
        "images": torch.from_numpy(images),
        "labels": labels,
        "mask": mask,
        "dataset": [rec.dataset for rec, _ in samples],
        "index": torch.tensor([idx for _, idx in samples], dtype=torch.int64),
    }


def detection_batch(samples: list, rngs, aug: DetectionAugment, paste_pool=None) -> dict:
    out = [detection_sample(rec, rng, aug, paste_pool) for rec, rng in zip(samples, rngs)]
    return {
        "images": torch.from_numpy(np.stack([s.image for s in out])),
        "boxes": [torch.from_numpy(s.boxes) for s in out],
        "landmarks": [torch.from_numpy(s.landmarks) for s in out],
        "landmark_valid": [torch.from_numpy(s.landmark_valid) for s in out],
    }


@dataclass
class Walk:
    """Epoch-wise permutation walk over ``n`` items, ``per_step`` items per step."""

    name: str
    n: int
    per_step: int
    seed: int

    def __post_init__(self):
        self._cache: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.clear()
            self._cache[epoch] = np.random.default_rng([self.seed, dataset_id(self.name), epoch]).permutation(self.n)
        return self._cache[epoch]

    def indices(self, step: int) -> list[tuple[int, int]]:
        """``[(item index, epoch)]`` of the items this step takes."""
        out = []
        for j in range(self.per_step):
            c = step * self.per_step + j
            epoch, pos = divmod(c, self.n)
            out.append((int(self.permutation(epoch)[pos]), epoch))
        return out

    def epoch_of(self, step: int) -> int:
        return (step * self.per_step) // max(1, self.n)


class TrainStream(torch.utils.data.Dataset):
    """Map-style dataset whose index is the training step; ``stream[i]`` is
    ``{"step", "det": {...} or None, "attr": {...} or None}``."""

    def __init__(self, wider: list[WiderImage] | None, faces: dict[str, list[FaceRecord]], *,
                 det_batch: int, attr_batch: int, shares: dict[str, float], tasks, seed: int = 0,
                 det_aug: DetectionAugment | None = None, crop_aug: CropAugment | None = None,
                 paste_pool: list[FaceRecord] | None = None, length: int = 10**9):
        self.wider = wider or []
        self.faces = {k: v for k, v in faces.items() if v}
        self.tasks = tuple(tasks)
        self.seed = int(seed)
        self.det_aug = det_aug or DetectionAugment()
        self.crop_aug = crop_aug
        self.paste_pool = paste_pool
        self.length = int(length)
        self.det_walk = Walk("widerface", len(self.wider), det_batch if self.wider else 0, self.seed)
        counts = split_counts(attr_batch, {k: shares.get(k, 0.0) for k in self.faces})
        self.walks = {k: Walk(k, len(self.faces[k]), c, self.seed) for k, c in counts.items() if c > 0}

    def __len__(self) -> int:
        return self.length

    def _rngs(self, step: int, name: str, n: int):
        return [np.random.default_rng([self.seed, step, dataset_id(name), j]) for j in range(n)]

    def __getitem__(self, step: int) -> dict:
        step = int(step)
        batch: dict = {"step": step, "det": None, "attr": None}
        if self.det_walk.per_step:
            recs = [self.wider[i] for i, _ in self.det_walk.indices(step)]
            batch["det"] = detection_batch(recs, self._rngs(step, "widerface", len(recs)), self.det_aug, self.paste_pool)
        samples, rngs = [], []
        for name, walk in self.walks.items():
            picked = walk.indices(step)
            samples += [(self.faces[name][i], i) for i, _ in picked]
            rngs += self._rngs(step, name, len(picked))
        if samples:
            batch["attr"] = attribute_batch(samples, self.tasks, rngs, self.crop_aug)
        return batch

    def epochs(self, step: int) -> dict[str, int]:
        """The epoch each data set's walk is in at ``step``."""
        out = {name: w.epoch_of(step) for name, w in self.walks.items()}
        if self.det_walk.per_step:
            out["widerface"] = self.det_walk.epoch_of(step)
        return out


def _as_is(batch):
    return batch


def make_loader(stream: TrainStream, start: int, stop: int, workers: int = 0, prefetch: int = 2):
    """A DataLoader yielding ``stream[start] .. stream[stop - 1]`` in order. It owns its
    torch generator, so creating it leaves the global torch RNG untouched."""
    kwargs = {"prefetch_factor": prefetch} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        stream, batch_size=None, sampler=range(start, stop), num_workers=workers,
        collate_fn=_as_is, generator=torch.Generator().manual_seed(0), **kwargs,
    )
