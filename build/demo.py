"""The demo: serve the default model on the embedded Triton server, analyse the sample
frames through the SDK, print per-face results and write annotated pictures.

    bash build/demo.sh                  # installs, then runs this
    python build/demo.py --out demo-output [--url HOST:PORT to use a running server]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from omniface import Client, samples
from omniface.cli import face_rows, format_table
from omniface.server import EmbeddedServer, free_port
from omniface.visualize import annotate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for annotated pictures")
    parser.add_argument("--url", help="use a running server instead of starting the embedded one")
    args = parser.parse_args(argv)

    server = None
    if args.url is None:
        server = EmbeddedServer(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())
        print(f"Starting the embedded tritonserver on {server.model_repository or 'the default model repository'} ...", flush=True)
    started = time.monotonic()
    with server or nullcontext():
        url = args.url or server.grpc_url
        if server is not None:
            print(f"Server ready in {time.monotonic() - started:.1f} s at {url}\n", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        with Client(url) as client:
            frames = samples.sample_frames()
            for name, frame in frames.items():
                result = client.analyze(frame)
                print(f"== {name} ({result.width}x{result.height}): {len(result.faces)} face(s)")
                print(format_table(face_rows(name, result)))
                out_path = args.out / f"{name}.png"
                annotate(frame, result).save(out_path)
                print(f"   annotated picture: {out_path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
