"""Measure the SDK end to end: cold start of the embedded server, then analyze_batch
frames/s on the sample frames at several concurrencies, next to the in-process pipeline
(same graphs, same steps) measured in the same run.

    python build/bench_sdk.py [--frames 60] [--concurrency 1 4] [--url HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

from omniface import Client, samples
from omniface.server import EmbeddedServer, free_port
from omniface.serving.pipeline import LocalPipeline


def frames_per_second(run, frames: list) -> float:
    started = time.perf_counter()
    run(frames)
    return len(frames) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60, help="frames per measurement (sample frames repeated)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--url", help="measure a running server instead of starting the embedded one")
    args = parser.parse_args(argv)

    pool = list(samples.sample_frames().values())
    frames = [pool[i % len(pool)] for i in range(args.frames)]
    server = None if args.url else EmbeddedServer(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())
    started = time.monotonic()
    with server or nullcontext():
        if server is not None:
            print(f"cold start until every model is ready: {time.monotonic() - started:.2f} s")
        with Client(args.url or server.grpc_url, timeout=60) as client:
            client.analyze_batch(frames[: len(pool)], concurrency=1)  # warm-up
            print(f"{'path':<12} {'concurrency':>11} {'frames/s':>9}")
            for concurrency in args.concurrency:
                fps = frames_per_second(lambda f: client.analyze_batch(f, concurrency=concurrency), frames)
                print(f"{'served':<12} {concurrency:>11} {fps:>9.1f}")
    local = LocalPipeline()
    inputs = [{"IMAGE_RAW": frame} for frame in frames]
    local.run(inputs[0])
    fps = frames_per_second(lambda batch: [local.run(i) for i in batch], inputs)
    print(f"{'in-process':<12} {1:>11} {fps:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
