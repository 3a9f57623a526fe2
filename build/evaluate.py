"""Evaluate a checkpoint or the exported ONNX graphs on the held-out validation splits.

    python build/evaluate.py --checkpoint runs/default/model.pt
    python build/evaluate.py --onnx-dir model_repository --out runs/default/eval_onnx.json
    python build/evaluate.py --onnx-dir runs/quantized --onnx-file model.qdq-cpu.onnx   # the INT8 Q/DQ graphs
    python build/evaluate.py --checkpoint runs/default/last.pt --set eval.max_images=100 --set eval.max_crops=500
    python build/evaluate.py --onnx-dir model_repository --served      # + the attributes as the SDK returns them
    python build/evaluate.py --onnx-dir model_repository --no-attributes --det-size letterbox 640 960 1280 native \
        --plot docs/performance/ap-by-det-size.png     # AP per difficulty at each detection size

Detection AP@0.5 (all faces, and easy / medium / hard by face height), landmark NME
(normalised by the face box size), age MAE, gender accuracy, expression accuracy and
per-class recall, smile accuracy and head-pose MAE per angle. Frames go through
``omniface.processing`` (letterbox, decode, NMS) exactly as the server does; with
``--det-size`` once per size (a long side, ``native``, or ``letterbox``: the 640x480 canvas
the network is trained on), each frame sized as the server sizes it for that ``det_size``. The split
settings (data root, val fraction, split seed) come from the checkpoint's training
config when it has one, else from --config / the defaults, then --set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="OmniFaceNet checkpoint (model.pt or last.pt)")
    source.add_argument("--onnx-dir", type=Path, help="model repository holding detector/ and attributes/ ONNX graphs")
    parser.add_argument("--onnx-file", default="model.onnx",
                        help="with --onnx-dir: the graph file in each version folder (e.g. model.qdq-cpu.onnx)")
    parser.add_argument("--config", type=Path, default=None, help="TOML config for the data settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default: next to the checkpoint, or ./eval.json)")
    parser.add_argument("--no-detection", action="store_true", help="skip the WIDER FACE detection metrics")
    parser.add_argument("--no-attributes", action="store_true", help="skip the attribute metrics")
    parser.add_argument("--served", action="store_true",
                        help="also read the attribute sets through the served pipeline as the SDK does "
                             "(analyze on each crop centred in a 2x canvas; analyze_faces on the crop as it is); "
                             "a checkpoint is exported to a temporary repository first")
    parser.add_argument("--det-size", nargs="+", default=None, metavar="SIZE",
                        help="detection AP at each size: a long side (32-1920), 'native', or 'letterbox' "
                        "(default: letterbox only)")
    parser.add_argument("--plot", type=Path, default=None, help="with --det-size: PNG of AP against size")
    args = parser.parse_args(argv)

    from omniface.training.config import apply_overrides, load_config
    from omniface.processing.image import parse_det_size
    from omniface.training.evaluate import (OnnxBackend, TorchBackend, detection_by_size_table, evaluate_attributes,
                                            evaluate_detection, format_table, plot_detection_by_size, size_label,
                                            subsample)

    sizes = [None if s == "letterbox" else parse_det_size(s) for s in (args.det_size or ["letterbox"])]
    from omniface.training.datasets import load_sets

    cfg = load_config(args.config)
    if args.checkpoint is not None:
        import torch

        from omniface.nn import load_model

        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        if "train_config" in ckpt and args.config is None:
            cfg["data"].update(ckpt["train_config"]["data"])
        cfg["model"]["tasks"] = list(ckpt["config"].get("tasks", cfg["model"]["tasks"]))
        apply_overrides(cfg, args.overrides)
        backend = TorchBackend(load_model(args.checkpoint), threads=cfg["eval"]["threads"])
        source = str(args.checkpoint)
    else:
        apply_overrides(cfg, args.overrides)
        backend = OnnxBackend(args.onnx_dir, threads=cfg["eval"]["threads"], filename=args.onnx_file)
        source = str(args.onnx_dir)

    e = cfg["eval"]
    cfg["data"]["detection"] = not args.no_detection
    if args.no_attributes:
        cfg["data"]["attribute_sets"] = []
    wider, faces = load_sets(cfg, "val")
    results: dict = {"source": source, "split": {k: cfg["data"][k] for k in ("root", "val_fraction", "split_seed")}}
    t0 = time.monotonic()
    if wider:
        wider = subsample(wider, e["max_images"])
        by_size = {}
        for det_size in sizes:
            started = time.monotonic()
            by_size[size_label(det_size)] = evaluate_detection(backend, wider, e["score_threshold"], e["nms_iou"],
                                                               e["max_faces"], e["batch"], det_size=det_size)
            by_size[size_label(det_size)]["seconds"] = round(time.monotonic() - started, 1)
        results["detection"] = next(iter(by_size.values()))
        if args.det_size:
            results["detection_by_size"] = by_size
            print(detection_by_size_table(by_size))
            if args.plot:
                plot_detection_by_size(by_size, args.plot)
                print(f"wrote {args.plot}")
    if faces:
        faces = {k: subsample(v, e["max_crops"]) for k, v in faces.items()}
        results["attributes"] = evaluate_attributes(backend, faces, batch=max(1, 4 * e["batch"]))
    if faces and args.served:
        import tempfile

        from omniface.training.served_eval import evaluate_served

        with tempfile.TemporaryDirectory() as tmp:
            repo = args.onnx_dir
            if repo is None or args.onnx_file != "model.onnx":
                if args.checkpoint is None:
                    parser.error("--served reads a repository's model.onnx graphs; export the Q/DQ graphs into one")
                from omniface.export import export_all
                from omniface.nn import load_model

                export_all(load_model(args.checkpoint), tmp)
                repo = Path(tmp)
            results["served"] = evaluate_served(repo, faces, threads=cfg["eval"]["threads"])
    results["seconds"] = round(time.monotonic() - t0, 1)
    print(format_table({k: v for k, v in results.items() if k not in ("source", "split", "detection_by_size")}))
    out = args.out or ((args.checkpoint.parent / f"eval_{args.checkpoint.stem}.json") if args.checkpoint else Path("eval.json"))
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
