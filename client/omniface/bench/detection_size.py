"""What detection costs against the size it runs at (``omniface bench detection-size``).

For each frame and each ``det_size`` (a long side, or native), two figures:

* the detector graph alone: ONNX Runtime with the served thread setting (one intra-op
  thread, ``repository.ORT_THREADS``), batch 1, on the canvas preprocess makes for that
  size (``processing.image.fit_detector``): median and p90 ms per frame, frames/s;
* optionally, the whole served pipeline: perf_analyzer against the embedded server with
  ``det_size`` sent as the request's setting (``bench.inputs``), frames/s and p50 at one
  concurrency, so what a larger size costs end to end is measured, not inferred.

Detection accuracy at each size comes from ``build/evaluate.py --det-size`` on held-out
WIDER images; docs/performance.md puts both side by side.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from omniface import contract, repository
from omniface.bench.inputs import BenchImage


@dataclass
class SizeCost:
    """The cost of detecting one frame at one ``det_size``."""

    image: str
    frame: tuple[int, int]        # (width, height) of the frame
    det_size: str                 # "640", ..., "native"
    canvas: tuple[int, int]       # (width, height) the detector runs on
    locations: int
    detector_ms: float            # median, batch 1
    detector_p90_ms: float
    prepare_ms: float             # fit_detector: resize and pad (median)
    served_fps: float | None = None
    served_p50_ms: float | None = None

    @property
    def detector_fps(self) -> float:
        return 1000.0 / self.detector_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "detector_fps": self.detector_fps}


def size_name(det_size: int) -> str:
    return contract.DET_SIZE_NATIVE_NAME if det_size == contract.DET_SIZE_NATIVE else str(det_size)


def graph_costs(graph: Path, images: Sequence[BenchImage], sizes: Sequence[int], threads: int | None = None,
                runs: int = 20, warmup: int = 3) -> list[SizeCost]:
    """The detector graph's cost per image and size (see the module docstring)."""
    from omniface.processing.image import fit_detector
    from omniface.runtime import make_session, time_session

    session = make_session(graph, threads=threads or repository.ORT_THREADS[contract.DETECTOR])
    rows = []
    for image in images:
        for det_size in sizes:
            prepare = []
            for _ in range(5):
                started = time.perf_counter()
                canvas, _ = fit_detector(image.pixels, det_size)
                prepare.append((time.perf_counter() - started) * 1e3)
            timing = time_session(session, {contract.DETECTOR_IMAGE: canvas[np.newaxis]}, runs=runs, warmup=warmup)
            height, width = canvas.shape[:2]
            rows.append(SizeCost(image.name, (image.shape[1], image.shape[0]), size_name(det_size), (width, height),
                                 contract.detector_locations(height, width), timing["median_ms"], timing["p90_ms"],
                                 float(np.median(prepare))))
    return rows


def cost_table(rows: Sequence[SizeCost]) -> str:
    """Markdown: one row per image and size."""
    served = any(r.served_fps is not None for r in rows)
    head = ["frame", "det_size", "canvas", "locations", "detector ms/frame (p90)", "detector fr/s", "resize+pad ms"]
    head += ["served fr/s", "served p50 ms"] if served else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{r.image} {r.frame[0]}x{r.frame[1]}", r.det_size, f"{r.canvas[0]}x{r.canvas[1]}", str(r.locations),
                 f"{r.detector_ms:.1f} ({r.detector_p90_ms:.1f})", f"{r.detector_fps:.1f}", f"{r.prepare_ms:.1f}"]
        if served:
            cells += ["-" if r.served_fps is None else f"{r.served_fps:.1f}",
                      "-" if r.served_p50_ms is None else f"{r.served_p50_ms:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_costs(rows: Sequence[SizeCost], path: Path) -> Path:
    """Detector ms/frame against canvas megapixels (one line per frame), and served
    frames/s per size where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = [r for r in rows if r.served_fps is not None]
    fig, axes = plt.subplots(1, 2 if served else 1, figsize=(11 if served else 6, 4), squeeze=False)
    left = axes[0][0]
    for image in dict.fromkeys(r.image for r in rows):
        mine = [r for r in rows if r.image == image]
        pixels = [r.canvas[0] * r.canvas[1] / 1e6 for r in mine]
        left.plot(pixels, [r.detector_ms for r in mine], marker="o", label=image)
        for r, x in zip(mine, pixels):
            left.annotate(r.det_size, (x, r.detector_ms), textcoords="offset points", xytext=(4, -10), fontsize=8)
    left.set_xlabel("detector canvas (megapixels)")
    left.set_ylabel("detector ms per frame (1 thread, batch 1)")
    left.set_title("Detector cost against input size")
    left.grid(alpha=0.3)
    left.legend()
    if served:
        right = axes[0][1]
        labels = [f"{r.image}\n{r.det_size}" for r in served]
        right.bar(range(len(served)), [r.served_fps for r in served])
        right.set_xticks(range(len(served)), labels, fontsize=8)
        right.set_ylabel("served frames/s")
        right.set_title("Whole served pipeline, det_size per request")
        right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
