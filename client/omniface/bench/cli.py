"""``omniface bench``: perf_analyzer sweeps, the overhead budget, tuning, transport, soak.

    omniface bench sweep     [--url HOST:PORT] [--image PATH... | --sample NAME...] [--input-kind raw encoded]
                             [--concurrency 1 2 4 8 16] [--request-rate R...] [--shared-memory system] [--faces N]
    omniface bench compare   [--case real faces1 faces20] [--input-kind raw encoded] [--concurrency 1 4 16]
    omniface bench tune      [--preset NAME...] [--case faces1] [--input-kind raw] [--concurrency 1 4 16]
    omniface bench transport [--case faces1] [--concurrency 1 4 16]
    omniface bench soak      [--duration 600] [--concurrency 4] [--input-kind raw] [--faces N]
                             [--url HOST:PORT --metrics-url URL --server-pid PID]
    omniface bench detection-size [--image PATH... | --sample NAME...] [--det-size 640 960 1280 native] [--served]
    omniface bench inputs    [--image PATH... | --sample NAME...] [--out DIR]   # input-data JSON only
    omniface bench paths     # shell exports for perf_analyzer / Model Analyzer by hand

Without ``--url`` each command starts the embedded tritonserver on free loopback ports
(rendering a variant repository where the command needs one) and stops it at the end.
Every command writes ``report.md``, ``results.json``, PNG plots, the input-data JSON
and perf_analyzer's CSV files (the composing models' too) under ``--out``.
``--pause-pid-file F`` SIGSTOPs the process whose pid F holds while measuring (a
background job sharing the cores) and SIGCONTs it afterwards, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path


DEFAULT_OUT = "bench-out"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommands, on ``parser`` (``omniface bench`` or build/bench.py)."""
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT}/<command>)")
        p.add_argument("--measurement-interval", type=_positive_int, default=3000, metavar="MS",
                       help="perf_analyzer time window in ms (default: 3000)")
        p.add_argument("--stability", type=_positive_int, default=15, metavar="PERCENT",
                       help="perf_analyzer stability threshold over 3 windows (default: 15)")
        p.add_argument("--max-trials", type=_positive_int, default=6, help="windows per point before the "
                       "request-count fallback (default: 6)")
        p.add_argument("--request-count", type=_positive_int, default=None,
                       help="measure each point over exactly this many requests instead of time windows")
        p.add_argument("--pause-pid-file", metavar="FILE", default=None,
                       help="SIGSTOP the pid in FILE while measuring, SIGCONT after")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    def rounds(p: argparse.ArgumentParser) -> None:
        p.add_argument("--rounds", type=_positive_int, default=2,
                       help="measure everything this many times, servers held together, best round kept (default: 2)")

    def kinds(p: argparse.ArgumentParser, default: Sequence[str]) -> None:
        p.add_argument("--input-kind", nargs="+", choices=("raw", "encoded"), default=list(default),
                       help="frames sent raw (IMAGE_RAW) or encoded (IMAGE_BYTES, JPEG)")

    sweep = sub.add_parser("sweep", help="perf_analyzer over concurrency / request rate on real images")
    sweep.add_argument("--url", help="gRPC endpoint of a running server (default: start the embedded one)")
    sweep.add_argument("--image", nargs="+", default=[], metavar="PATH", help="image files to send")
    sweep.add_argument("--sample", nargs="+", default=None, metavar="NAME",
                       help="sample frames: astronaut group_of_6 crowd_20 coffee_no_face (default: astronaut)")
    kinds(sweep, ["raw", "encoded"])
    sweep.add_argument("--concurrency", nargs="*", type=_positive_int, default=[1, 2, 4, 8, 16])
    sweep.add_argument("--request-rate", nargs="*", type=_positive_float, default=[],
                       help="also sweep these open-loop request rates (requests/s)")
    sweep.add_argument("--shared-memory", choices=("none", "system"), default="none",
                       help="pass tensors through system shared memory (the embedded server then serves an "
                       "ensemble whose one input is required: perf_analyzer refuses optional inputs there)")
    sweep.add_argument("--faces", type=_positive_int, default=None,
                       help="embedded server only: force N faces per frame (score threshold 0, max_faces N)")
    sweep.add_argument("--model-repository", default=None, help="embedded server: repository to serve")
    common(sweep)

    compare = sub.add_parser("compare", help="the overhead budget: served vs in-process, same run")
    compare.add_argument("--case", nargs="+", default=["real", "faces1", "faces20"],
                         choices=("real", "faces1", "faces20"))
    kinds(compare, ["raw", "encoded"])
    compare.add_argument("--concurrency", nargs="+", type=_positive_int, default=[1, 4, 16])
    compare.add_argument("--preset", default="shipped",
                         help="the served repository variant (omniface.bench.experiments.PRESETS; default: shipped)")
    compare.add_argument("--inprocess-seconds", type=_positive_float, default=6.0,
                         help="seconds of in-process load per concurrency (default: 6)")
    common(compare)
    rounds(compare)

    tune = sub.add_parser("tune", help="one sweep per repository variant (instances, delays, threads)")
    tune.add_argument("--preset", nargs="+", default=None, help="variants or groups of them to measure "
                      "(default: stage1); see omniface.bench.experiments.PRESETS and PRESET_GROUPS")
    tune.add_argument("--variant-json", nargs="*", default=[], metavar="JSON",
                      help='extra variants, e.g. \'{"name": "x", "instance_counts": {"preprocess": 2}}\'')
    tune.add_argument("--case", default="faces1", choices=("real", "faces1", "faces20"))
    tune.add_argument("--input-kind", default="raw", choices=("raw", "encoded"))
    tune.add_argument("--concurrency", nargs="+", type=_positive_int, default=[1, 4, 16])
    common(tune)
    rounds(tune)

    transport = sub.add_parser("transport", help="raw vs encoded frames, with and without system shared memory")
    transport.add_argument("--case", default="faces1", choices=("real", "faces1", "faces20"))
    transport.add_argument("--concurrency", nargs="+", type=_positive_int, default=[1, 4, 16])
    common(transport)
    rounds(transport)

    detsize = sub.add_parser("detection-size", help="detection cost against input size (ms/frame, frames/s, plot)",
                             description="The detector graph on the canvas each det_size makes (one ONNX Runtime "
                             "thread, batch 1, as served), and with --served the whole served pipeline with det_size "
                             "sent per request (perf_analyzer).")
    detsize.add_argument("--image", nargs="+", default=[], metavar="PATH", help="image files")
    detsize.add_argument("--sample", nargs="+", default=None, metavar="NAME",
                         help="sample frames (default: crowd_20 crowd_20_large)")
    detsize.add_argument("--det-size", nargs="+", default=["640", "960", "1280", "native"], metavar="SIZE",
                         help="long sides (32-1920) or native (default: 640 960 1280 native)")
    detsize.add_argument("--runs", type=_positive_int, default=20, help="timed detector runs per point (default: 20)")
    detsize.add_argument("--served", action="store_true", help="also measure the served pipeline per size")
    detsize.add_argument("--concurrency", type=_positive_int, default=4, help="with --served (default: 4)")
    detsize.add_argument("--preset", default="fused4-x2",
                         help="with --served: the repository variant (default: fused4-x2, what omniface serve serves)")
    detsize.add_argument("--model-repository", default=None, help="where the detector graph lies (default: the default one)")
    common(detsize)

    inputs = sub.add_parser("inputs", help="write perf_analyzer input-data JSON (raw.json, encoded.json) from images",
                            description="For perf_analyzer or Model Analyzer by hand: --input-data DIR/raw.json")
    inputs.add_argument("--out", default=f"{DEFAULT_OUT}/inputs", help="folder (default: bench-out/inputs)")
    inputs.add_argument("--image", nargs="+", default=[], metavar="PATH", help="image files")
    inputs.add_argument("--sample", nargs="+", default=None, metavar="NAME",
                        help="sample frames (default: astronaut when no --image)")
    inputs.add_argument("--required-input", action="store_true",
                        help="for a server whose ensemble takes one required input (shared-memory runs)")

    paths = sub.add_parser("paths", help="print shell exports for running perf_analyzer (or Model Analyzer) by hand",
                           description="Prints PERF_ANALYZER=... and LD_LIBRARY_PATH=... (with libcudart.so.12's "
                           "folder); use: eval \"$(omniface bench paths)\"")
    paths.set_defaults(bench_command="paths")

    soak = sub.add_parser("soak", help="a long run with the server's resident memory sampled")
    soak.add_argument("--duration", type=_positive_float, default=600.0, help="seconds (default: 600)")
    soak.add_argument("--concurrency", type=_positive_int, default=4)
    soak.add_argument("--input-kind", default="raw", choices=("raw", "encoded"))
    soak.add_argument("--sample", nargs="+", default=["astronaut", "crowd_20"], metavar="NAME")
    soak.add_argument("--faces", type=_positive_int, default=None, help="force N faces per frame (embedded)")
    soak.add_argument("--preset", default="shipped", help="embedded server: the repository variant to soak "
                      "(omniface.bench.experiments.PRESETS, e.g. fused4-x2; default: shipped)")
    soak.add_argument("--segment", type=_positive_float, default=60.0, help="seconds per perf_analyzer run")
    soak.add_argument("--warmup", type=float, default=30.0, help="seconds of unrecorded load first (default: 30)")
    soak.add_argument("--max-growth-mib", type=float, default=None,
                      help="allowed RSS growth (default: max(16 MiB, 2%% of the start))")
    soak.add_argument("--url", help="soak a running server (needs --metrics-url and --server-pid)")
    soak.add_argument("--metrics-url", help="its metrics endpoint, http://HOST:8002/metrics")
    soak.add_argument("--server-pid", type=int, help="its tritonserver pid (the process tree is sampled)")
    common(soak)


def _measurement(args):
    from omniface.bench.perf import Measurement

    return Measurement(interval_ms=args.measurement_interval, stability_percent=args.stability,
                       max_trials=args.max_trials, request_count=args.request_count)


def _out(args, command: str) -> Path:
    out = Path(args.out)
    if args.out == DEFAULT_OUT:
        out = out / command
    out.mkdir(parents=True, exist_ok=True)
    return out


def _log(message: str) -> None:
    print(f"omniface bench: {message}", file=sys.stderr, flush=True)


def _environment_section(perf) -> str:
    import os
    import platform

    from omniface.bench.report import markdown_table
    from omniface.server import TRITON_VERSION

    rows = [["perf_analyzer", f"{perf.binary} ({perf.version() or '?'})"],
            ["tritonserver", f"{TRITON_VERSION} (nvidia-pytriton, CPU)"],
            ["CPU cores", str(os.cpu_count())], ["platform", platform.platform()],
            ["date", time.strftime("%Y-%m-%d %H:%M:%S %Z")]]
    return "## Environment\n\n" + markdown_table(["what", "value"], rows)


def _command_line() -> str:
    return "`" + " ".join(["omniface", *sys.argv[1:]] if Path(sys.argv[0]).name == "omniface" else sys.argv) + "`"


def cmd_sweep(args) -> int:
    from omniface.bench import inputs as bench_inputs
    from omniface.bench.experiments import Variant, forced_faces, serve_variant
    from omniface.bench.perf import find_perf_analyzer, points
    from omniface.bench.report import write_report
    from omniface.bench.sweep import run_sweep

    perf = find_perf_analyzer()
    out = _out(args, "sweep")
    images = [bench_inputs.from_file(p) for p in args.image]
    if args.sample or not images:
        images += bench_inputs.sample_images(args.sample or ["astronaut"])
    load = points(args.concurrency, args.request_rate)
    if not load:
        _log("nothing to measure: give --concurrency and/or --request-rate")
        return 2
    sweeps = []
    for kind in args.input_kind:
        required = bench_inputs.KIND_TENSOR[kind] if args.shared_memory != "none" else None
        variant = Variant(name=f"sweep-{kind}" + ("-shm" if required else ""),
                          postprocess=forced_faces(args.faces) if args.faces else {}, required_input=required)
        models = variant.models() if args.url is None else None
        with contextlib.ExitStack() as stack:
            if args.url:
                url, settings = args.url, {"url": args.url}
            else:
                server = stack.enter_context(serve_variant(variant, out, args.model_repository))
                url, settings = server.grpc_url, variant.to_dict()
                settings["server_pid"], settings["metrics_url"] = server.pid, server.metrics_url
            data = bench_inputs.write_input_data(out / "inputs" / f"{kind}.json", images, kind, models)
            from omniface.bench.system import paused

            with paused(args.pause_pid_file):
                sweeps.append(run_sweep(perf, url, data, load, out / "perf", f"{kind}" + (
                    f" shm-{args.shared_memory}" if args.shared_memory != "none" else ""),
                    input_kind=kind, images=[i.name for i in images], shared_memory=args.shared_memory,
                    measurement=_measurement(args), settings=settings, progress=not args.no_progress,
                    server_pid=settings.get("server_pid"), metrics_url=settings.get("metrics_url")))
    sections = [_environment_section(perf), f"Command: {_command_line()}",
                "Images: " + ", ".join(f"{i.name} ({i.shape[1]}x{i.shape[0]}, {len(i.encoded)} B encoded)" for i in images)]
    report = write_report(out, "omniface sweep", sweeps, sections)
    _log(f"report: {report}")
    failed = [r for s in sweeps for r in s.results if not r.ok]
    for result in failed:
        _log(f"{result.point.label} failed: {result.error}")
    return 1 if failed else 0


def _preset(name: str):
    """The one preset ``--preset`` names, or None (said why) for an unknown name."""
    from omniface.bench.experiments import PRESETS

    if name not in PRESETS:
        _log(f"--preset takes one preset name, one of {list(PRESETS)}; {name!r} is not one")
        return None
    return PRESETS[name]


def cmd_compare(args) -> int:
    from omniface.bench.experiments import budget_summary, comparison_table, overhead_budget
    from omniface.bench.perf import find_perf_analyzer
    from omniface.bench.report import write_report
    from omniface.bench.system import paused

    base = _preset(args.preset)
    if base is None:
        return 2
    perf = find_perf_analyzer()
    out = _out(args, "compare")
    with paused(args.pause_pid_file):
        rows, sweeps, faces = overhead_budget(perf, out, cases=args.case, kinds=args.input_kind, base=base,
                                              concurrency=args.concurrency, measurement=_measurement(args),
                                              inprocess_seconds=args.inprocess_seconds, rounds=args.rounds,
                                              progress=not args.no_progress, log=_log)
    sections = [_environment_section(perf), f"Command: {_command_line()}",
                "## Served / in-process", comparison_table(rows), "## Targets", budget_summary(rows),
                "Faces per frame (checked through the SDK before measuring): "
                + ", ".join(f"{k}: {v}" for k, v in faces.items())]
    report = write_report(out, "omniface overhead budget", sweeps, sections,
                          {"comparison": [r.to_dict() for r in rows], "faces": faces})
    print(comparison_table(rows))
    print()
    print(budget_summary(rows))
    _log(f"report: {report}")
    return 0


def cmd_tune(args) -> int:
    from omniface.bench.experiments import expand_presets, tune, tuning_table, variant_from_dict
    from omniface.bench.perf import find_perf_analyzer
    from omniface.bench.system import paused

    try:
        variants = expand_presets(args.preset or ["stage1"])
    except KeyError as exc:
        _log(str(exc.args[0]))
        return 2
    variants += [variant_from_dict(json.loads(v)) for v in args.variant_json]
    perf = find_perf_analyzer()
    out = _out(args, "tune")
    with paused(args.pause_pid_file):
        sweeps = tune(perf, out, variants, case=args.case, kind=args.input_kind, concurrency=args.concurrency,
                      measurement=_measurement(args), rounds=args.rounds, progress=not args.no_progress, log=_log)
    table = tuning_table(sweeps, args.concurrency)
    return _table_report(out, "omniface tuning", sweeps, perf, "## Variants", table)


def _table_report(out, title: str, sweeps, perf, heading: str, table: str) -> int:
    """Write the report of a sweep experiment whose result is one table, and print it."""
    from omniface.bench.report import write_report

    report = write_report(out, title, sweeps, [_environment_section(perf), f"Command: {_command_line()}", heading, table])
    print(table)
    _log(f"report: {report}")
    return 0


def cmd_transport(args) -> int:
    from omniface.bench.experiments import transport, transport_table
    from omniface.bench.perf import find_perf_analyzer
    from omniface.bench.system import paused

    perf = find_perf_analyzer()
    out = _out(args, "transport")
    with paused(args.pause_pid_file):
        sweeps = transport(perf, out, case=args.case, concurrency=args.concurrency, measurement=_measurement(args),
                           rounds=args.rounds,
                           progress=not args.no_progress, log=_log)
    table = transport_table(sweeps, args.concurrency)
    return _table_report(out, "omniface transport", sweeps, perf, "## Transport", table)


def cmd_soak(args) -> int:
    from omniface.bench import inputs as bench_inputs
    from omniface.bench.experiments import forced_faces, serve_variant
    from omniface.bench.perf import find_perf_analyzer
    from omniface.bench.report import plot_soak, write_report
    from omniface.bench.soak import run_soak
    from omniface.bench.system import paused

    perf = find_perf_analyzer()
    out = _out(args, "soak")
    images = bench_inputs.sample_images(args.sample)
    with contextlib.ExitStack() as stack:
        if args.url:
            if not (args.metrics_url and args.server_pid):
                _log("--url needs --metrics-url and --server-pid (the tritonserver whose memory is sampled)")
                return 2
            url, metrics_url, pid = args.url, args.metrics_url, args.server_pid
        else:
            base = _preset(args.preset)
            if base is None:
                return 2
            variant = base.with_(name="soak", postprocess=forced_faces(args.faces) if args.faces else {})
            server = stack.enter_context(serve_variant(variant, out))
            url, metrics_url, pid = server.grpc_url, server.metrics_url, server.pid
        data = bench_inputs.write_input_data(out / "inputs" / f"soak-{args.input_kind}.json", images, args.input_kind)
        with paused(args.pause_pid_file):
            result = run_soak(perf, url, metrics_url, pid, data, out / "perf", duration_s=args.duration,
                              concurrency=args.concurrency, input_kind=args.input_kind, segment_s=args.segment,
                              warmup_s=args.warmup,
                              max_growth_mib=args.max_growth_mib, progress=not args.no_progress)
    plot_soak([s.__dict__ for s in result.samples], result.segments, out / "soak.png",
              f"Soak: concurrency {result.concurrency}, {result.input_kind} frames")
    sections = [_environment_section(perf), f"Command: {_command_line()}", "## Result", result.summary(),
                "Images: " + ", ".join(i.name for i in images), "![soak](soak.png)"]
    if result.errors:
        sections.append("## Errors\n\n" + "\n".join(f"- {e}" for e in result.errors))
    report = write_report(out, "omniface soak", [], sections, {"soak": result.to_dict()})
    print(result.summary())
    _log(f"report: {report}")
    return 0 if result.passed else 1


def cmd_detection_size(args) -> int:
    from omniface import repository
    from omniface.bench import inputs as bench_inputs
    from omniface.bench.detection_size import cost_table, graph_costs, plot_costs
    from omniface.bench.report import write_report
    from omniface.bench.system import paused
    from omniface.errors import InvalidInput
    from omniface.processing.image import parse_det_size

    try:
        sizes = [parse_det_size(s) for s in args.det_size]
    except InvalidInput as exc:
        _log(str(exc))
        return 2
    out = _out(args, "detection-size")
    images = [bench_inputs.from_file(p) for p in args.image]
    if args.sample or not images:
        images += bench_inputs.sample_images(args.sample or ["crowd_20", "crowd_20_large"])
    source = Path(args.model_repository) if args.model_repository else repository.default_repository_path()
    graph = source / "detector" / "1" / "model.onnx"
    with paused(args.pause_pid_file):
        rows = graph_costs(graph, images, sizes, runs=args.runs)
        sweeps = _served_costs(args, out, images, sizes, rows, source) if args.served else []
    table = cost_table(rows)
    plot = plot_costs(rows, out / "detection-size.png")
    sections = [f"Command: {_command_line()}", "## Detection cost against input size", table, f"![cost]({plot.name})"]
    if sweeps:
        sections.insert(0, _environment_section(sweeps[0][1]))
    report = write_report(out, "omniface detection size", [s for s, _ in sweeps], sections,
                          {"detection_size": [r.to_dict() for r in rows]})
    print(table)
    _log(f"report: {report}")
    return 0


def _served_costs(args, out, images, sizes, rows, source) -> list:
    """perf_analyzer per image and size against one embedded server (``--preset``), the
    size sent as each request's det_size; fills ``served_fps`` / ``served_p50_ms`` of ``rows``."""
    from omniface import contract
    from omniface.bench import inputs as bench_inputs
    from omniface.bench.detection_size import size_name
    from omniface.bench.experiments import serve_variant
    from omniface.bench.perf import LoadPoint, find_perf_analyzer
    from omniface.bench.sweep import run_sweep

    base = _preset(args.preset)
    if base is None:
        raise SystemExit(2)
    perf = find_perf_analyzer()
    sweeps = []
    with serve_variant(base.with_(name=f"detsize-{base.name}"), out, source) as server:
        for image in images:
            for det_size in sizes:
                name = f"{image.name}-{size_name(det_size)}"
                data = bench_inputs.write_input_data(out / "inputs" / f"{name}.json", [image], "raw",
                                                     settings={contract.DET_SIZE: det_size})
                sweep = run_sweep(perf, server.grpc_url, data, [LoadPoint(concurrency=args.concurrency)], out / "perf",
                                  name, input_kind="raw", images=[image.name], measurement=_measurement(args),
                                  settings={"det_size": size_name(det_size), **base.to_dict()},
                                  progress=not args.no_progress, server_pid=server.pid, metrics_url=server.metrics_url)
                row = next(r for r in rows if r.image == image.name and r.det_size == size_name(det_size))
                if sweep.best() is not None:
                    best = sweep.best().row
                    row.served_fps, row.served_p50_ms = best.throughput, (best.p50_us or 0) / 1000
                sweeps.append((sweep, perf))
    return sweeps


def cmd_inputs(args) -> int:
    from omniface import repository
    from omniface.bench import inputs as bench_inputs

    images = [bench_inputs.from_file(p) for p in args.image]
    if args.sample or not images:
        images += bench_inputs.sample_images(args.sample or ["astronaut"])
    for kind in bench_inputs.INPUT_KINDS:
        models = (repository.variant_models(required_input=bench_inputs.KIND_TENSOR[kind])
                  if args.required_input else None)
        path = bench_inputs.write_input_data(Path(args.out) / f"{kind}.json", images, kind, models)
        print(path)
    return 0


def cmd_paths(args) -> int:
    import shlex

    from omniface.bench.perf import find_perf_analyzer

    perf = find_perf_analyzer()
    print(f"export PERF_ANALYZER={shlex.quote(str(perf.binary))}")
    print(f"export LD_LIBRARY_PATH={shlex.quote(perf.environment()['LD_LIBRARY_PATH'])}")
    return 0


HANDLERS = {"sweep": cmd_sweep, "compare": cmd_compare, "tune": cmd_tune, "transport": cmd_transport,
            "soak": cmd_soak, "detection-size": cmd_detection_size, "inputs": cmd_inputs, "paths": cmd_paths}


def run(args: argparse.Namespace) -> int:
    """Dispatch parsed ``bench`` arguments; OmnifaceError -> one line, exit 1 (3 for a
    server that is not there)."""
    from omniface.errors import MissingDependency, OmnifaceError, ServerUnavailable

    import signal

    handler = HANDLERS.get(getattr(args, "bench_command", None) or "")
    if handler is None:
        _log(f"give a command: {', '.join(HANDLERS)} (omniface bench --help)")
        return 2

    import os

    # The in-process baseline must run with the thread settings the server's stubs get
    # (EmbeddedServer sets OMP_NUM_THREADS=1): no BLAS / OpenMP pools beside ONNX Runtime's.
    # Set before numpy is first imported, which no bench module does at import time.
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

    def terminate(signum, frame):  # unwind: stop the servers, continue a paused job
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return handler(args)
    except MissingDependency as exc:
        _log(f"error: {exc}")
        return 1
    except ServerUnavailable as exc:
        _log(f"error: {exc}")
        return 3
    except OmnifaceError as exc:
        _log(f"error: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omniface bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
