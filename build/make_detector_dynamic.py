"""Give the committed detector graph a variable input height and width (graph surgery).

    python build/make_detector_dynamic.py                       # model_repository/detector/1/model.onnx
    python build/make_detector_dynamic.py --graph PATH [--dry-run]

The graph exported before contract 1.1 takes only 480x640 frames (its head reshapes
carry that size's cell counts) and its PyTorch checkpoint is not in the repository, so
``omniface.export.dynamic.make_dynamic_hw`` rewrites it in place. Before writing, the
result is checked against the original: the same outputs at 480x640 (max |diff| on a real
frame and on noise, which must stay under 1e-5), and at other sizes the location count the
contract expects and finite scores in [0, 1]. Re-running on a dynamic graph changes nothing.
Fresh exports (``build/export_onnx.py``) are dynamic already and need none of this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "client"))

import numpy as np  # noqa: E402

from omniface import contract  # noqa: E402

DEFAULT_GRAPH = ROOT / "model_repository" / contract.DETECTOR / "1" / "model.onnx"
OUTPUTS = (contract.DETECTOR_SCORES, contract.DETECTOR_BOXES, contract.DETECTOR_LANDMARKS)
TOLERANCE = 1e-5
OTHER_SIZES = ((32, 32), (320, 640), (640, 480), (704, 1024), (1440, 1920))


def _run(session, frames: np.ndarray) -> list[np.ndarray]:
    return session.run(list(OUTPUTS), {contract.DETECTOR_IMAGE: frames})


def _frames(height: int, width: int) -> np.ndarray:
    """A real frame (the sample astronaut, fitted to the size) and seeded noise."""
    from omniface import samples
    from omniface.processing import image

    astronaut, _ = image.letterbox(samples.astronaut(), height, width)
    noise = np.random.default_rng(height * 7 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.stack([astronaut, noise])


def verify(original, converted) -> list[str]:
    """Lines of a report; raises SystemExit when the converted graph disagrees."""
    import onnxruntime as ort

    def session(model):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    old, new = session(original), session(converted)
    height, width = contract.DETECTOR_INPUT_HEIGHT, contract.DETECTOR_INPUT_WIDTH
    frames = _frames(height, width)
    diffs = {name: float(np.abs(a - b).max()) for name, a, b in zip(OUTPUTS, _run(old, frames), _run(new, frames))}
    lines = [f"{height}x{width}, old vs new graph, max |diff|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())]
    if max(diffs.values()) > TOLERANCE:
        raise SystemExit(f"the converted graph disagrees with the original at {height}x{width}: {diffs}")
    for h, w in OTHER_SIZES:
        scores, boxes, landmarks = _run(new, _frames(h, w))
        locations = contract.detector_locations(h, w)
        if scores.shape != (2, locations) or boxes.shape != (2, locations, 4) or landmarks.shape[:2] != (2, locations):
            raise SystemExit(f"{h}x{w}: output shapes {scores.shape}, {boxes.shape}, {landmarks.shape}; "
                             f"expected {locations} locations")
        if not (np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all() and np.isfinite(boxes).all()):
            raise SystemExit(f"{h}x{w}: non-finite or out-of-range outputs")
        lines.append(f"{h}x{w}: {locations} locations, top score on the astronaut {scores[0].max():.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", type=Path, default=DEFAULT_GRAPH, help=f"detector graph (default: {DEFAULT_GRAPH})")
    parser.add_argument("--dry-run", action="store_true", help="convert and verify, write nothing")
    args = parser.parse_args(argv)

    import onnx

    from omniface.export import check_against_contract
    from omniface.export.dynamic import input_hw, is_dynamic_hw, make_dynamic_hw, set_metadata

    original = onnx.load(str(args.graph))
    if is_dynamic_hw(original):
        print(f"{args.graph}: already takes any height and width {input_hw(original)}; nothing to do")
        return 0
    converted = make_dynamic_hw(original)
    set_metadata(converted, **{contract.CONTRACT_VERSION_PARAMETER: contract.CONTRACT_VERSION})
    for line in verify(original, converted):
        print(line)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    onnx.save(converted, str(args.graph))
    check_against_contract(args.graph, contract.MODELS[contract.DETECTOR])
    print(f"wrote {args.graph}: input {input_hw(original)} -> {input_hw(converted)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
