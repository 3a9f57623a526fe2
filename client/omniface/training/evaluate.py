"""Evaluation on the held-out validation splits, through the served graphs' semantics.

Both backends run what the server runs: the detector graph on frames letterboxed to the
contract's 640x480 by ``omniface.processing.image.letterbox``, decoded, mapped back and
NMS'd by ``omniface.processing.detection.detect_faces``; the attributes graph on uint8
crops. ``TorchBackend`` wraps a checkpoint in the export wrappers
(``omniface.export.DetectorGraph`` / ``AttributesGraph``: same normalisation, sigmoid
and CORAL decoding as the ONNX graphs); ``OnnxBackend`` runs ``detector/<v>/model.onnx``
and ``attributes/<v>/model.onnx`` with ONNX Runtime.

Metrics
-------
* Detection AP at IoU 0.5, VOC all-point interpolation, WIDER-protocol style per
  difficulty set (``omniface.data.widerface.DIFFICULTY_MIN_HEIGHT``): detections are
  matched greedily by score to the highest-IoU face; a match to a face outside the set is
  ignored (neither hit nor false positive); a second match to a face is a false positive.
* Landmark NME: mean point-to-point error of the 5 landmarks of each detected (matched,
  all-faces set) face with landmark annotation, divided by the face box size
  ``sqrt(w * h)`` of the ground truth (inter-ocular distance collapses on profile faces,
  which WIDER has many of).
* Attributes on each data set's val crops (fixed template mapping, no augmentation):
  age MAE (years) and mean predicted age_std, gender accuracy, expression accuracy,
  per-class recall and their mean, smile accuracy, head-pose MAE per angle (degrees).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from omniface import contract
from omniface.data import crop_sample, difficulty_masks
from omniface.data.mixed import base_transform
from omniface.processing.detection import detect_faces
from omniface.processing.image import fit_detector, letterbox

IOU_THRESHOLD = 0.5


# ------------------------------------------------------------------------------ backends


class TorchBackend:
    def __init__(self, net, threads: int = 2):
        import torch

        from omniface.export import AttributesGraph, DetectorGraph

        torch.set_num_threads(int(threads))
        self.torch = torch
        self.net = net.eval()
        self.det = DetectorGraph(self.net).eval()
        self.attr = AttributesGraph(self.net).eval()
        self.attribute_names = tuple(self.attr.output_names)

    def detect(self, frames: np.ndarray):
        with self.torch.no_grad():
            s, b, lm = self.det(self.torch.from_numpy(np.ascontiguousarray(frames)))
        return s.numpy(), b.numpy(), lm.numpy()

    def attributes(self, crops: np.ndarray) -> dict:
        with self.torch.no_grad():
            out = self.attr(self.torch.from_numpy(np.ascontiguousarray(crops)))
        return {n: o.numpy() for n, o in zip(self.attribute_names, out)}


def _onnx_file(root: Path, name: str, filename: str = "model.onnx") -> Path:
    folder = root / name
    versions = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) if folder.is_dir() else []
    for v in reversed(versions):
        if (v / filename).is_file():
            return v / filename
    raise FileNotFoundError(f"{folder}: no <version>/{filename}; export one with build/export_onnx.py")


class OnnxBackend:
    """The repository's ONNX graphs (``<dir>/detector/<v>/model.onnx``, ``<dir>/attributes/<v>/model.onnx``)."""

    def __init__(self, onnx_dir: str | os.PathLike, threads: int = 2, filename: str = "model.onnx"):
        from omniface.runtime import make_session

        root = Path(onnx_dir)
        self.det = make_session(_onnx_file(root, contract.DETECTOR, filename), threads)
        self.attr = make_session(_onnx_file(root, contract.ATTRIBUTES, filename), threads)
        self.attribute_names = tuple(o.name for o in self.attr.get_outputs())

    def detect(self, frames: np.ndarray):
        names = [contract.DETECTOR_SCORES, contract.DETECTOR_BOXES, contract.DETECTOR_LANDMARKS]
        return tuple(self.det.run(names, {contract.DETECTOR_IMAGE: np.ascontiguousarray(frames, np.uint8)}))

    def attributes(self, crops: np.ndarray) -> dict:
        out = self.attr.run(list(self.attribute_names), {contract.CROPS: np.ascontiguousarray(crops, np.uint8)})
        return dict(zip(self.attribute_names, out))


# ------------------------------------------------------------------------------ detection


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_detections(det_boxes, det_scores, gt_boxes, in_set, iou_threshold: float = IOU_THRESHOLD):
    """Per detection (in the given order): 1 hit, 0 false positive, -1 ignored; and the
    matched GT index (-1 none)."""
    n = len(det_boxes)
    flags = np.zeros(n, np.int64)
    matched = np.full(n, -1, np.int64)
    if n == 0:
        return flags, matched
    if len(gt_boxes) == 0:
        return flags, matched
    iou = _iou_matrix(np.asarray(det_boxes, np.float64), np.asarray(gt_boxes, np.float64))
    taken = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-np.asarray(det_scores), kind="stable"):
        g = int(iou[i].argmax())
        if iou[i, g] < iou_threshold:
            continue
        if not in_set[g]:
            flags[i] = -1
        elif not taken[g]:
            taken[g] = True
            flags[i] = 1
            matched[i] = g
    return flags, matched


def average_precision(scores, flags, num_gt: int) -> float:
    """VOC all-point interpolated AP from per-detection scores and hit flags (1 hit,
    0 false positive, -1 ignored) over a whole set with ``num_gt`` faces."""
    if num_gt == 0:
        return float("nan")
    scores, flags = np.asarray(scores, np.float64), np.asarray(flags)
    keep = flags >= 0
    scores, flags = scores[keep], flags[keep]
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order] == 1)
    fp = np.cumsum(flags[order] == 0)
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum())


def landmark_nme(pred: np.ndarray, gt: np.ndarray, gt_box: np.ndarray) -> float:
    """Mean 5-point error / sqrt(box w * h) for one face."""
    size = np.sqrt(max((gt_box[2] - gt_box[0]) * (gt_box[3] - gt_box[1]), 1e-9))
    return float(np.linalg.norm(np.asarray(pred) - np.asarray(gt), axis=-1).mean() / size)


def _detect_chunk(backend, frames: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Raw detector outputs per frame; frames of one canvas size go in one batch."""
    outputs: list = [None] * len(frames)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames):
        by_shape.setdefault(frame.shape, []).append(i)
    for indices in by_shape.values():
        scores, dists, lms = backend.detect(np.stack([frames[i] for i in indices]))
        for row, i in enumerate(indices):
            outputs[i] = (scores[row], dists[row], lms[row])
    return outputs


def evaluate_detection(backend, images, score_threshold: float = 0.02, nms_iou: float = contract.NMS_IOU_DEFAULT,
                       max_faces: int = 200, batch: int = 8, progress=None, det_size: int | None = None) -> dict:
    """AP@0.5 per difficulty set and landmark NME over WIDER images (``WiderImage`` list).

    ``det_size`` None letterboxes every frame to the training canvas (contract 1.0's
    serving); a long side (or ``contract.DET_SIZE_NATIVE``) sizes each frame as the server
    does for that ``det_size`` (``processing.image.fit_detector``)."""
    h, w = contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH
    per_set = {name: {"scores": [], "flags": [], "num_gt": 0} for name in difficulty_masks(np.zeros((0, 4)))}
    nmes = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        frames, boxes, sizes = [], [], []
        for rec in chunk:
            with Image.open(rec.path) as im:
                rgb = np.asarray(im.convert("RGB"))
            canvas, box = letterbox(rgb, h, w) if det_size is None else fit_detector(rgb, det_size)
            frames.append(canvas)
            boxes.append(box)
            sizes.append(rgb.shape[:2])
        raw = _detect_chunk(backend, frames)
        for i, rec in enumerate(chunk):
            scores, dists, lms = raw[i]
            dets = detect_faces(scores, dists, lms, boxes[i], sizes[i][0], sizes[i][1],
                                score_threshold, nms_iou, max_faces, frames[i].shape[0], frames[i].shape[1])
            masks = difficulty_masks(rec.boxes)
            for name, in_set in masks.items():
                flags, matched = match_detections(dets.boxes, dets.scores, rec.boxes, in_set)
                per_set[name]["scores"].extend(dets.scores.tolist())
                per_set[name]["flags"].extend(flags.tolist())
                per_set[name]["num_gt"] += int(in_set.sum())
                if name == "all":
                    for d, g in enumerate(matched):
                        if g >= 0 and rec.landmark_valid[g]:
                            nmes.append(landmark_nme(dets.landmarks[d], rec.landmarks[g], rec.boxes[g]))
        if progress is not None:
            progress(len(chunk))
    out = {f"ap50_{name}": average_precision(v["scores"], v["flags"], v["num_gt"]) for name, v in per_set.items()}
    out.update({f"faces_{name}": v["num_gt"] for name, v in per_set.items()})
    out["landmark_nme_box"] = float(np.mean(nmes)) if nmes else float("nan")
    out["landmark_faces"] = len(nmes)
    out["images"] = len(images)
    return out


def size_label(det_size: int | None) -> str:
    """How tables name a detection size: ``640``, ``native``, or the training letterbox."""
    if det_size is None:
        return f"letterbox {contract.DETECTOR_INPUT_WIDTH}x{contract.DETECTOR_INPUT_HEIGHT}"
    return contract.DET_SIZE_NATIVE_NAME if det_size == contract.DET_SIZE_NATIVE else str(det_size)


def detection_by_size_table(by_size: dict[str, dict]) -> str:
    """Markdown: AP@0.5 per difficulty at each detection size (``{label: evaluate_detection result}``)."""
    lines = ["| det_size | AP easy | AP medium | AP hard | AP all | landmark NME (faces matched) |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, d in by_size.items():
        lines.append(f"| {label} | {d['ap50_easy']:.3f} | {d['ap50_medium']:.3f} | {d['ap50_hard']:.3f} | "
                     f"{d['ap50_all']:.3f} | {d['landmark_nme_box']:.3f} ({d['landmark_faces']}) |")
    return "\n".join(lines)


def plot_detection_by_size(by_size: dict[str, dict], path: str | os.PathLike) -> None:
    """AP@0.5 per difficulty against detection size, one line per difficulty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(by_size)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in ("easy", "medium", "hard", "all"):
        ax.plot(labels, [by_size[k][f"ap50_{name}"] for k in labels], marker="o", label=name)
    ax.set_xlabel("det_size (long side, px)")
    ax.set_ylabel("AP@0.5")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(title="WIDER difficulty")
    ax.set_title("Detection AP against detection size (held-out WIDER split)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------ attributes


def load_crops(records) -> np.ndarray:
    crops = np.zeros((len(records), contract.CROP_SIZE, contract.CROP_SIZE, 3), np.uint8)
    for i, rec in enumerate(records):
        with Image.open(rec.path) as im:
            im = im.convert("RGB")
            crops[i], _ = crop_sample(im, base_transform(rec, *im.size), rec.labels, None, None)
    return crops


def attribute_metrics(pred: dict, records) -> dict:
    """Metrics for the labels these records carry, from graph outputs ``pred``."""
    out: dict = {}
    labels = {k: [r.labels[k] for r in records if k in r.labels] for k in ("age", "gender", "expression", "smile", "head_pose")}
    has = {k: np.array([k in r.labels for r in records]) for k in labels}
    if labels["age"] and contract.AGE in pred:
        age = pred[contract.AGE].reshape(-1)[has["age"]]
        out["age_mae"] = float(np.abs(age - np.asarray(labels["age"])).mean())
        if contract.AGE_STD in pred:
            out["age_std_mean"] = float(pred[contract.AGE_STD].reshape(-1)[has["age"]].mean())
    if labels["gender"] and contract.GENDER in pred:
        p = pred[contract.GENDER].reshape(-1)[has["gender"]]
        out["gender_acc"] = float(((p > 0.5) == (np.asarray(labels["gender"]) > 0.5)).mean())
    if labels["expression"] and contract.EXPRESSION in pred:
        y = np.asarray(labels["expression"], np.int64)
        yhat = pred[contract.EXPRESSION][has["expression"]].argmax(1)
        out["expression_acc"] = float((yhat == y).mean())
        recall = {}
        for k, name in enumerate(contract.EXPRESSIONS):
            if (y == k).any():
                recall[name] = float((yhat[y == k] == k).mean())
        out["expression_recall"] = recall
        out["expression_mean_recall"] = float(np.mean(list(recall.values()))) if recall else float("nan")
    if labels["smile"] and contract.SMILE in pred:
        p = pred[contract.SMILE].reshape(-1)[has["smile"]]
        out["smile_acc"] = float(((p > 0.5) == (np.asarray(labels["smile"]) > 0.5)).mean())
    if labels["head_pose"] and contract.HEAD_POSE in pred:
        err = np.abs(pred[contract.HEAD_POSE][has["head_pose"]] - np.stack(labels["head_pose"]))
        out["pose_mae"] = {a: float(err[:, i].mean()) for i, a in enumerate(contract.HEAD_POSE_ANGLES)}
    return out


def evaluate_attributes(backend, faces: dict, batch: int = 64, progress=None) -> dict:
    """``{data set: metrics}`` over ``{data set: records}``."""
    results = {}
    for name, records in faces.items():
        if not records:
            continue
        preds: dict[str, list] = {}
        for start in range(0, len(records), batch):
            out = backend.attributes(load_crops(records[start:start + batch]))
            for k, v in out.items():
                preds.setdefault(k, []).append(v)
            if progress is not None:
                progress(min(batch, len(records) - start))
        pred = {k: np.concatenate(v) for k, v in preds.items()}
        results[name] = {"samples": len(records), **attribute_metrics(pred, records)}
    return results


def subsample(items: list, limit: int) -> list:
    """At most ``limit`` items, evenly spread (deterministic); 0 = all."""
    if not limit or len(items) <= limit:
        return list(items)
    idx = np.linspace(0, len(items) - 1, int(limit)).round().astype(int)
    return [items[i] for i in idx]


def format_table(results: dict) -> str:
    """A plain-text table of the flat metrics."""
    lines = [f"{'metric':<48} {'value':>10}", "-" * 59]

    def emit(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                emit(f"{prefix}.{k}" if prefix else k, v)
        elif isinstance(value, float):
            lines.append(f"{prefix:<48} {value:>10.4f}")
        else:
            lines.append(f"{prefix:<48} {value!s:>10}")

    emit("", results)
    return "\n".join(lines)


HEADLINE = (
    ("AP easy", ("detection", "ap50_easy"), "{:.3f}"),
    ("AP medium", ("detection", "ap50_medium"), "{:.3f}"),
    ("AP hard", ("detection", "ap50_hard"), "{:.3f}"),
    ("AP all", ("detection", "ap50_all"), "{:.3f}"),
    ("NME", ("detection", "landmark_nme_box"), "{:.3f}"),
    ("age MAE", ("attributes", "utkface", "age_mae"), "{:.2f}"),
    ("gender %", ("attributes", "utkface", "gender_acc"), "{:.1%}"),
    ("expr %", ("attributes", "fer2013", "expression_acc"), "{:.1%}"),
    ("expr recall", ("attributes", "fer2013", "expression_mean_recall"), "{:.1%}"),
    ("smile %", ("attributes", "genki4k", "smile_acc"), "{:.1%}"),
    ("yaw", ("attributes", "genki4k", "pose_mae", "yaw"), "{:.2f}"),
    ("pitch", ("attributes", "genki4k", "pose_mae", "pitch"), "{:.2f}"),
    ("roll", ("attributes", "genki4k", "pose_mae", "roll"), "{:.2f}"),
)
"""The model card's columns: (header, path into an ``evaluate`` result, format)."""


def headline(results: dict) -> dict[str, float]:
    """The model card's metrics from one ``build/evaluate.py`` result (missing -> nan)."""
    row = {}
    for name, path, _ in HEADLINE:
        node = results
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        row[name] = float(node) if isinstance(node, (int, float)) else float("nan")
    return row


def markdown_table(rows: dict[str, dict]) -> str:
    """``{row label: build/evaluate.py result}`` -> a Markdown table of the headline metrics."""
    head = "| | " + " | ".join(name for name, _, _ in HEADLINE) + " |"
    sep = "|---|" + "---:|" * len(HEADLINE)
    lines = [head, sep]
    for label, results in rows.items():
        values = headline(results)
        cells = ["–" if np.isnan(values[name]) else fmt.format(values[name]).replace("%", " %")
                 for name, _, fmt in HEADLINE]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TARGETS = (
    ("AP easy", ">=", 0.85), ("AP medium", ">=", 0.75), ("AP hard", ">=", 0.45),
    ("age MAE", "<=", 6.0), ("gender %", ">=", 0.90), ("expr %", ">=", 0.65), ("smile %", ">=", 0.90),
    ("yaw", "<=", 5.0), ("pitch", "<=", 4.0), ("roll", "<=", 3.0),
)
"""The default model's accuracy targets on held-out data (issue: the model)."""


def targets_table(results: dict) -> str:
    """Markdown: each target, the measured value, met or by how much it is missed."""
    values = headline(results)
    fmt = {name: f for name, _, f in HEADLINE}
    lines = ["| metric | target | measured | met | gap |", "|---|---|---:|---|---:|"]
    for name, op, target in TARGETS:
        value = values[name]
        show = lambda v: fmt[name].format(v).replace("%", " %")  # noqa: E731
        if np.isnan(value):
            lines.append(f"| {name} | {op} {show(target)} | – | – | – |")
            continue
        met = value >= target if op == ">=" else value <= target
        gap = "" if met else show(abs(value - target))
        lines.append(f"| {name} | {op} {show(target)} | {show(value)} | {'yes' if met else 'no'} | {gap} |")
    return "\n".join(lines)
