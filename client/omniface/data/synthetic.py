"""Generated data in the real data sets' formats, for tests and for the heads that have
no real labels here (glasses, action units).

``write_fixture(root)`` writes a small data root with ``widerface/`` (RetinaFace
``label.txt`` + images, one listed image left off disk, a face without landmarks, a face
with score -1), ``utkface/crop_part1`` (plus one malformed name), ``fer2013/train/<expr>/``
and ``genki4k/`` (``labels.txt`` listing more files than exist). Faces are drawn
cartoons whose attributes show (mouth curve = smile, background hue = expression, skin
brightness = age, a beard = male, nose shift = yaw), so a network can learn them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from omniface import contract

from .faces import SOURCE_FACE_POINTS, FaceRecord

EXPRESSION_COLOURS = [(200, 40, 40), (60, 160, 60), (120, 60, 160), (240, 220, 60), (150, 150, 150), (40, 60, 200), (240, 140, 40)]


def draw_face(draw: ImageDraw.ImageDraw, left_eye, right_eye, mouth, *, smile: float = 0.0, skin: int = 200,
              beard: bool = False, yaw: float = 0.0, glasses: bool = False, gray: bool = False) -> np.ndarray:
    """Draw a cartoon face from its eye and mouth-centre points; returns the five
    contract landmarks [5, 2] (eyes, nose, mouth corners) of the drawing."""
    le, re, mc = (np.asarray(p, np.float64) for p in (left_eye, right_eye, mouth))
    d = np.linalg.norm(re - le)
    centre = (le + re) / 2 * 0.55 + mc * 0.45
    rx, ry = 1.05 * d, 1.35 * d
    col = (skin,) * 3 if gray else (skin, int(skin * 0.8), int(skin * 0.65))
    draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry], fill=col)
    r = max(1.0, 0.12 * d)
    for e in (le, re):
        draw.ellipse([e[0] - r, e[1] - r, e[0] + r, e[1] + r], fill=(20, 20, 20))
        if glasses:
            g = 2.2 * r
            draw.ellipse([e[0] - g, e[1] - g, e[0] + g, e[1] + g], outline=(0, 0, 0), width=max(1, int(r / 2)))
    nose = (le + re) / 2 * 0.5 + mc * 0.5 + np.array([yaw / 90.0 * 0.4 * d, 0.0])
    draw.ellipse([nose[0] - r, nose[1] - r, nose[0] + r, nose[1] + r], fill=(120, 60, 50) if not gray else (90,) * 3)
    ml, mr = mc - np.array([0.4 * d, 0.0]), mc + np.array([0.4 * d, 0.0])
    lift = (0.25 * d) * (1 if smile > 0.5 else -0.3)
    ml, mr = ml - np.array([0, lift]), mr - np.array([0, lift])
    draw.line([tuple(ml), tuple(mc), tuple(mr)], fill=(90, 10, 10) if not gray else (40,) * 3, width=max(1, int(r)))
    if beard:
        draw.rectangle([mc[0] - 0.5 * d, mc[1] + 0.25 * d, mc[0] + 0.5 * d, mc[1] + 0.6 * d], fill=(50, 40, 30))
    return np.stack([le, re, nose, ml, mr])


def _crop(dataset: str, size: int, rng, **face) -> Image.Image:
    pts = np.asarray(SOURCE_FACE_POINTS[dataset]) * size + rng.normal(0, 0.01 * size, (3, 2))
    bg = face.pop("background", (90, 110, 130))
    gray = face.get("gray", False)
    img = Image.new("RGB", (size, size), bg)
    draw_face(ImageDraw.Draw(img), *pts, **face)
    return img.convert("L") if gray else img


def write_widerface(root: Path, rng, images: int = 6, size: tuple[int, int] = (160, 120)) -> None:
    folder = root / "widerface" / "train" / "images" / "0--Synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(images):
        name = f"0_Synthetic_{i}.jpg"
        img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(40, 120, 3)))
        draw = ImageDraw.Draw(img)
        lines.append(f"# 0--Synthetic/{name}")
        n = 1 + i % 3
        for j in range(n):
            h = float(rng.uniform(24, 50))
            x = float(rng.uniform(5, size[0] - 0.8 * h - 5))
            y = float(rng.uniform(5, size[1] - h - 5))
            w = 0.8 * h
            le, re = (x + 0.3 * w, y + 0.38 * h), (x + 0.7 * w, y + 0.38 * h)
            mouth = (x + 0.5 * w, y + 0.75 * h)
            lm = draw_face(draw, le, re, mouth, smile=float(rng.random() > 0.5), skin=int(rng.integers(150, 230)))
            box = f"{int(x)} {int(y)} {int(round(w))} {int(round(h))}"
            if i == 1 and j == 0:
                lines.append(box + " " + " ".join(["-1.0"] * 15) + " 0.5")
            else:
                pts = " ".join(f"{px:.3f} {py:.3f} 0.0" for px, py in lm)
                lines.append(f"{box} {pts} {'-1.0' if j == 1 else '0.8'}")
        if i != images - 1:  # the last listed image is not on disk
            img.save(folder / name, quality=92)
    (root / "widerface" / "train" / "label.txt").write_text("\n".join(lines) + "\n")


def write_utkface(root: Path, rng, n: int = 24) -> None:
    folder = root / "utkface" / "crop_part1"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        age, gender = int(rng.integers(1, 90)), int(rng.integers(0, 2))
        img = _crop("utkface", 200, rng, skin=int(230 - age), beard=gender == 0)
        img.save(folder / f"{age}_{gender}_{i % 4}_2017010917{i:07d}.jpg.chip.jpg", quality=92)
    _crop("utkface", 200, rng).save(folder / "61_1_20170109142408075.jpg.chip.jpg")  # malformed: no race


def write_fer2013(root: Path, rng, per_class: int = 4) -> None:
    for k, name in enumerate(contract.EXPRESSIONS):
        folder = root / "fer2013" / "train" / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _crop("fer2013", 48, rng, smile=float(name == "happy"), background=EXPRESSION_COLOURS[k], gray=True)
            img.save(folder / f"Training_{k * 1000 + i}.jpg", quality=92)


def write_genki4k(root: Path, rng, n: int = 20, listed: int = 30) -> None:
    base = root / "genki4k"
    lines = []
    for i in range(1, listed + 1):
        smile = int(rng.random() > 0.5)
        yaw, pitch, roll = rng.uniform(-0.4, 0.4, 3)
        lines.append(f"{smile} {yaw:.6f} {pitch:.6f} {roll:.6f}")
        if i <= n:
            folder = base / "train" / str(smile)
            folder.mkdir(parents=True, exist_ok=True)
            _crop("genki4k", 64, rng, smile=smile, yaw=float(np.degrees(yaw))).save(folder / f"file{i:04d}.jpg", quality=92)
    (base / "README").write_text("synthetic GENKI-4K-format fixture\n")
    (base / "labels.txt").write_text("\n".join(lines) + "\n")


def write_fixture(root: str | Path, seed: int = 0) -> Path:
    """Write all four data sets in their real formats under ``root``; returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    write_widerface(root, rng)
    write_utkface(root, rng)
    write_fer2013(root, rng)
    write_genki4k(root, rng)
    return root


def aligned_attribute_set(folder: str | Path, n: int = 16, seed: int = 0, name: str = "synthetic") -> list[FaceRecord]:
    """Template-aligned 112 crops with generated glasses and action-unit labels (no real
    data labels these tasks): glasses are drawn, AU k is 'active' when bit k of a random
    code is set and the mouth curve / skin tone follow the first two bits."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.asarray(contract.ALIGNMENT_TEMPLATE_112)
    records = []
    for i in range(n):
        glasses = bool(rng.random() > 0.5)
        aus = (rng.random(len(contract.ACTION_UNITS)) > 0.5).astype(np.float32)
        img = Image.new("RGB", (contract.CROP_SIZE,) * 2, (100, 100, 100))
        draw_face(ImageDraw.Draw(img), t[0], t[1], (t[3] + t[4]) / 2, smile=float(aus[0]), skin=160 + 60 * int(aus[1]),
                  glasses=glasses)
        path = folder / f"{name}_{i:04d}.png"
        img.save(path)
        records.append(FaceRecord(path, name, path.name, {"glasses": float(glasses), "action_units": aus}))
    return records
