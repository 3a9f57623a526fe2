"""Attribute metrics the way a user gets them: through the served pipeline.

``evaluate.evaluate_attributes`` reads each validation crop through its data set's fixed
template alignment, which the model was trained on: a flattering protocol. A user instead

* sends a photo to ``Client.analyze``: the detector must find the face, its landmarks
  drive the alignment, and only then do the heads read it;
* or sends a crop of any size to ``Client.analyze_faces``: it is resized to 112x112 as
  it is, with no alignment.

This module measures both on the held-out splits, in-process, through the server's own
steps (``serving.pipeline.LocalPipeline`` over a model repository, the code Triton runs)
and the SDK's own request building and parsing (``omniface._protocol``), so the numbers
are what ``Client`` returns:

* ``analyze``: each crop centred in a canvas twice its size (black, the letterbox colour),
  the highest-scoring face read; the share of crops where a face was found is reported and
  the metrics are over those;
* ``analyze_faces``: the crop resized to 112 (``protocol.crop_array``); GENKI-4K also as
  64x64 greyscale (``smile_grey``), like SMILEsmileD's crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from omniface import _protocol as protocol
from omniface import contract

from .evaluate import attribute_metrics


def _read(rec, grey: bool = False) -> np.ndarray:
    with Image.open(rec.path) as im:
        im = im.convert("L").convert("RGB") if grey else im.convert("RGB")
        return np.asarray(im)


def _outputs_to_pred(rows: list) -> dict:
    """SDK ``FaceAttributes``-like rows -> the graph-output dict ``attribute_metrics`` reads."""
    pred: dict = {}
    if rows and rows[0].get("age") is not None:
        pred[contract.AGE] = np.array([r["age"] for r in rows], np.float64)
    if rows and rows[0].get("gender") is not None:
        pred[contract.GENDER] = np.array([r["gender_p"] for r in rows], np.float64)
    if rows and rows[0].get("expression_scores") is not None:
        pred[contract.EXPRESSION] = np.array([[r["expression_scores"][e] for e in contract.EXPRESSIONS] for r in rows])
    if rows and rows[0].get("smile_score") is not None:
        pred[contract.SMILE] = np.array([r["smile_score"] for r in rows], np.float64)
    if rows and rows[0].get("head_pose") is not None:
        pred[contract.HEAD_POSE] = np.array([[r["head_pose"].yaw, r["head_pose"].pitch, r["head_pose"].roll] for r in rows], np.float64)
    return pred


def _row(obj) -> dict:
    """A parsed Face / FaceAttributes as a plain dict, with P(female) recovered."""
    d = {k: getattr(obj, k, None) for k in ("age", "gender", "gender_score", "expression_scores", "smile_score", "head_pose")}
    if d["gender"] is not None:
        d["gender_p"] = d["gender_score"] if d["gender"] == "female" else 1.0 - d["gender_score"]
    return d


class ServedEvaluator:
    """The server's steps over ``repo_dir``'s graphs, called as the SDK calls them."""

    def __init__(self, repo_dir: str | Path, threads: int = 2):
        from omniface.serving.pipeline import LocalPipeline

        self.pipeline = LocalPipeline(Path(repo_dir), threads={contract.DETECTOR: threads, contract.ATTRIBUTES: threads})

    def analyze(self, rgb: np.ndarray):
        return protocol.parse_frame_result(self.pipeline.run({contract.IMAGE_RAW: rgb}))

    def analyze_faces(self, crops: list[np.ndarray]) -> list:
        batch = np.stack([protocol.crop_array(c, "RGB") for c in crops])
        out = self.pipeline.run_attributes(batch)
        return protocol.parse_face_attributes(out, len(crops))


def centred_canvas(rgb: np.ndarray, factor: float = 2.0) -> np.ndarray:
    h, w = rgb.shape[:2]
    H, W = int(round(h * factor)), int(round(w * factor))
    canvas = np.zeros((H, W, 3), np.uint8)
    y, x = (H - h) // 2, (W - w) // 2
    canvas[y:y + h, x:x + w] = rgb
    return canvas


def evaluate_served(repo_dir: str | Path, faces: dict, threads: int = 2, batch: int = 64, progress=None) -> dict:
    """``{data set: {"analyze": metrics + found rate, "analyze_faces": metrics}}``."""
    ev = ServedEvaluator(repo_dir, threads)
    results: dict = {}
    for name, records in faces.items():
        if not records:
            continue
        out: dict = {}
        # analyze_faces: the crop as it is, resized to 112.
        rows = []
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            rows += [_row(a) for a in ev.analyze_faces([_read(r) for r in chunk])]
            if progress is not None:
                progress(len(chunk))
        out["analyze_faces"] = {"samples": len(records), **attribute_metrics(_outputs_to_pred(rows), records)}
        if name == "genki4k":
            rows = []
            for start in range(0, len(records), batch):
                rows += [_row(a) for a in ev.analyze_faces([_read(r, grey=True) for r in records[start:start + batch]])]
            grey = attribute_metrics(_outputs_to_pred(rows), records)
            out["analyze_faces_grey"] = {"samples": len(records), "smile_acc": grey.get("smile_acc")}
        # analyze: detection, landmark alignment, then the heads.
        found, rows = [], []
        for rec in records:
            result = ev.analyze(centred_canvas(_read(rec)))
            if result.faces:
                best = max(result.faces, key=lambda f: f.score)
                found.append(rec)
                rows.append(_row(best))
            if progress is not None:
                progress(1)
        metrics = attribute_metrics(_outputs_to_pred(rows), found) if found else {}
        out["analyze"] = {"samples": len(records), "found": len(found), "found_rate": len(found) / len(records), **metrics}
        results[name] = out
    return results


SERVED_HEADLINE = (
    ("age MAE (analyze)", ("utkface", "analyze", "age_mae"), "{:.2f}"),
    ("gender % (analyze)", ("utkface", "analyze", "gender_acc"), "{:.1%}"),
    ("found % (UTK analyze)", ("utkface", "analyze", "found_rate"), "{:.1%}"),
    ("age MAE (crops)", ("utkface", "analyze_faces", "age_mae"), "{:.2f}"),
    ("gender % (crops)", ("utkface", "analyze_faces", "gender_acc"), "{:.1%}"),
    ("expr % (crops)", ("fer2013", "analyze_faces", "expression_acc"), "{:.1%}"),
    ("expr recall (crops)", ("fer2013", "analyze_faces", "expression_mean_recall"), "{:.1%}"),
    ("smile % (crops)", ("genki4k", "analyze_faces", "smile_acc"), "{:.1%}"),
    ("smile % (64 px grey)", ("genki4k", "analyze_faces_grey", "smile_acc"), "{:.1%}"),
    ("yaw (crops)", ("genki4k", "analyze_faces", "pose_mae", "yaw"), "{:.2f}"),
    ("pitch (crops)", ("genki4k", "analyze_faces", "pose_mae", "pitch"), "{:.2f}"),
    ("roll (crops)", ("genki4k", "analyze_faces", "pose_mae", "roll"), "{:.2f}"),
)


def served_markdown_table(rows: dict[str, dict]) -> str:
    """``{row label: evaluate_served result}`` -> a Markdown table of the served metrics."""
    head = "| | " + " | ".join(n for n, _, _ in SERVED_HEADLINE) + " |"
    lines = [head, "|---|" + "---:|" * len(SERVED_HEADLINE)]
    for label, res in rows.items():
        cells = []
        for _, path, fmt in SERVED_HEADLINE:
            node = res
            for k in path:
                node = node.get(k, {}) if isinstance(node, dict) else {}
            cells.append(fmt.format(node).replace("%", " %") if isinstance(node, (int, float)) else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
