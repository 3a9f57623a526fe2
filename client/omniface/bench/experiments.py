"""The runs behind docs/performance.md, each against loopback servers it starts itself.

- ``overhead_budget``: served (perf_analyzer) against in-process (``LocalPipeline``,
  same graphs, same steps, same ONNX Runtime threads) at the same concurrencies, in the
  same run, for a real frame and for frames with 1 and 20 faces;
- ``tune``: one sweep per repository variant (instance counts, batching delays, ONNX
  Runtime threads) on the same frames;
- ``transport``: encoded against raw frames, with and without system shared memory.

Face counts. The committed network may still carry random weights, which find no face
in a real frame. The "forced" cases serve a variant whose postprocess keeps every
location (``score_threshold`` 0) and caps at N faces, so every frame yields exactly N
faces whatever the weights; each run checks that count through the SDK before it
measures. The "real" case measures the default repository on a real frame, so the
numbers can be re-run unchanged with a trained model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omniface import contract, repository
from omniface.bench import inputs as bench_inputs
from omniface.bench.inprocess import InProcessResult, closed_loop
from omniface.bench.perf import LoadPoint, Measurement, PerfAnalyzer, points
from omniface.bench.report import markdown_table, ms
from omniface.bench.sweep import Sweep, run_sweep, safe_name


@dataclass(frozen=True)
class Variant:
    """Settings a served repository may differ in (see ``repository.variant_models``)."""

    name: str = "default"
    instance_counts: Mapping[str, int] = field(default_factory=dict)
    ort_threads: Mapping[str, int] = field(default_factory=dict)
    max_queue_delay_us: Mapping[str, int] = field(default_factory=dict)
    preferred_batch_sizes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    postprocess: Mapping[str, str] = field(default_factory=dict)
    required_input: str | None = None
    fuse: tuple[str, ...] = ()

    def changes(self) -> dict:
        return {"postprocess": dict(self.postprocess), "ort_threads": dict(self.ort_threads),
                "max_queue_delay_us": dict(self.max_queue_delay_us),
                "preferred_batch_sizes": {k: list(v) for k, v in self.preferred_batch_sizes.items()},
                "required_input": self.required_input, "fuse": list(self.fuse) or None}

    def models(self) -> dict[str, contract.ModelSpec]:
        return repository.variant_models(**self.changes())

    def with_(self, **changes) -> "Variant":
        from dataclasses import replace

        return replace(self, **changes)

    def describe(self) -> str:
        """The effective settings: instance counts, ORT threads, batching per model."""
        models = self.models()
        counts = {**repository.DEFAULT_INSTANCE_COUNTS, **repository.CPU_INSTANCE_COUNTS, **self.instance_counts}
        parts = []
        if self.fuse:
            fused = repository.fused_name(self.fuse)
            parts.append(f"{' + '.join(self.fuse)} fused x{counts.get(fused, 1)}")
        for name in (contract.PREPROCESS, contract.DETECTOR, contract.POSTPROCESS, contract.ATTRIBUTES):
            if name in self.fuse:
                continue
            spec = models[name]
            text = f"{name} x{counts.get(name, 1)}"
            if spec.backend == "onnx":
                threads = spec.parameters.get("intra_op_threads", str(repository.ORT_THREADS.get(name, 1)))
                text += f" ort{threads}"
            if spec.dynamic_batching:
                text += f" delay{spec.max_queue_delay_us}us"
                if spec.preferred_batch_sizes:
                    text += f" pref{list(spec.preferred_batch_sizes)}"
            parts.append(text)
        if self.postprocess:
            parts.append("postprocess " + ",".join(f"{k}={v}" for k, v in sorted(self.postprocess.items())))
        if self.required_input:
            parts.append(f"input {self.required_input} only")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"name": self.name, "instance_counts": dict(self.instance_counts), **self.changes(),
                "description": self.describe()}


def forced_faces(faces: int) -> dict[str, str]:
    """Postprocess settings that make every frame yield exactly ``faces`` faces."""
    return {"score_threshold": "0.0", "max_faces": str(faces)}


@contextlib.contextmanager
def serve_variant(variant: Variant, work_dir: Path, source_repo: Path | None = None) -> Iterator:
    """Render ``variant`` under ``work_dir`` and serve it on free loopback ports."""
    from omniface.server import EmbeddedServer, free_port

    repo = repository.render_variant(Path(work_dir) / "repos" / safe_name(variant.name), source_repo,
                                     instance_counts=dict(variant.instance_counts), **variant.changes())
    server = EmbeddedServer(model_repository=repo, grpc_port=free_port(), http_port=free_port(),
                            metrics_port=free_port(), log_path=Path(work_dir) / f"{safe_name(variant.name)}-tritonserver.log")
    with server:
        server.repository_dir = repo  # type: ignore[attr-defined]
        yield server


def count_faces(url: str, image: bench_inputs.BenchImage) -> int:
    """Faces the server finds in ``image`` (through the SDK, raw pixels)."""
    from omniface import Client

    with Client(url, timeout=60, check_contract=False) as client:
        return len(client.analyze(image.pixels).faces)


@dataclass(frozen=True)
class Case:
    """A workload: which sample frame, and whether the face count is forced."""

    name: str
    image: str
    faces: int | None = None  # forced count; None: whatever the model finds

    def variant(self, base: Variant) -> Variant:
        if self.faces is None:
            return base.with_(name=f"{base.name}-{self.name}")
        return base.with_(name=f"{base.name}-{self.name}", postprocess={**base.postprocess, **forced_faces(self.faces)})


CASES: dict[str, Case] = {
    "real": Case("real", "astronaut"),
    "faces1": Case("faces1", "astronaut", 1),
    "faces20": Case("faces20", "crowd_20", 20),
}
"""real: the astronaut portrait on the default settings (0 faces with random weights,
1 with a trained model); faces1 / faces20: the astronaut forced to 1 face and the
20-head crowd frame forced to 20 faces."""


# --------------------------------------------------------------------------------------
# Overhead budget.
# --------------------------------------------------------------------------------------


@dataclass
class ComparisonRow:
    case: str
    faces: int
    kind: str
    concurrency: int
    served: dict | None
    inprocess: InProcessResult | None
    inprocess_rounds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.served or not self.inprocess:
            return None
        return self.served["throughput"] / self.inprocess.throughput

    def to_dict(self) -> dict:
        return {"case": self.case, "faces": self.faces, "kind": self.kind, "concurrency": self.concurrency,
                "served": self.served, "inprocess": self.inprocess.to_dict() if self.inprocess else None,
                "inprocess_rounds": self.inprocess_rounds, "ratio": self.ratio}


def overhead_budget(
    perf: PerfAnalyzer,
    out_dir: Path,
    *,
    cases: Sequence[str] = ("real", "faces1", "faces20"),
    kinds: Sequence[str] = ("raw", "encoded"),
    concurrency: Sequence[int] = (1, 4, 16),
    base: Variant | None = None,
    measurement: Measurement | None = None,
    inprocess_seconds: float = 5.0,
    rounds: int = 2,
    progress: bool = True,
    log=print,
) -> tuple[list[ComparisonRow], list[Sweep], dict]:
    """Served against in-process for each case and input kind, interleaved per
    concurrency (served, then in-process, then the next concurrency), ``rounds``
    times over servers held together; each side keeps its best round."""
    from omniface.serving.pipeline import LocalPipeline

    base = base or Variant()
    out_dir = Path(out_dir)
    found_faces: dict[str, int] = {}
    served: dict[tuple[str, str, int], list] = {}
    local: dict[tuple[str, str, int], list[InProcessResult]] = {}
    with contextlib.ExitStack() as stack:
        setups = []
        for case_name in cases:
            case = CASES[case_name]
            variant = case.variant(base)
            image = bench_inputs.sample_images([case.image])[0]
            server = stack.enter_context(serve_variant(variant, out_dir))
            faces = count_faces(server.grpc_url, image)
            found_faces[case_name] = faces
            if case.faces is not None and faces != case.faces:
                raise RuntimeError(f"case {case_name}: expected {case.faces} forced faces, the server found {faces}")
            log(f"{case_name}: {image.name} {image.shape[1]}x{image.shape[0]}, {faces} faces; {variant.describe()}")
            # The baseline is the unfused pipeline: the same steps, one process, on the graphs
            # the variant copied (a fused variant keeps them inside its fused model's folder).
            pipeline = LocalPipeline(repo_dir=repository.default_repository_path(), models=variant.with_(fuse=()).models())
            setups.append((case_name, variant, image, server, pipeline))
        for round_index in range(rounds):
            for case_name, variant, image, server, pipeline in setups:
                for kind in kinds:
                    data = bench_inputs.write_input_data(out_dir / "inputs" / f"{case_name}-{kind}.json", [image], kind)
                    request = bench_inputs.pipeline_inputs(image, kind)
                    log(f"round {round_index + 1}/{rounds}: {case_name} {kind}")
                    for c in concurrency:
                        sweep = run_sweep(perf, server.grpc_url, data, [LoadPoint(concurrency=c)],
                                          out_dir / "perf" / f"round{round_index + 1}", f"{case_name}-{kind}-c{c}",
                                          input_kind=kind, images=[image.name], measurement=measurement,
                                          settings=variant.to_dict(), progress=progress,
                                          server_pid=server.pid, metrics_url=server.metrics_url)
                        served.setdefault((case_name, kind, c), []).append(sweep.results[0])
                        local.setdefault((case_name, kind, c), []).append(closed_loop(
                            pipeline.run, [request], c, duration_s=inprocess_seconds, min_requests=max(10, 2 * c),
                            warmup_requests=max(2, c)))
    rows: list[ComparisonRow] = []
    sweeps: list[Sweep] = []
    for case_name, variant, image, _, _ in setups:
        for kind in kinds:
            merged = []
            for c in concurrency:
                ok = [r for r in served[(case_name, kind, c)] if r.ok]
                best = max(ok, key=lambda r: r.row.throughput) if ok else served[(case_name, kind, c)][0]
                if ok:
                    best.row.extra["rounds"] = ",".join(f"{r.row.throughput:.1f}" for r in ok)
                merged.append(best)
                top_local = max(local[(case_name, kind, c)], key=lambda r: r.throughput)
                summary = None
                if best.ok:
                    summary = {"throughput": best.row.throughput, "p50_us": best.row.p50_us,
                               "p99_us": best.row.p99_us, "avg_us": best.row.avg_us, "stable": best.stable,
                               "cpu_ms": best.server_cpu_ms, "rounds": [r.row.throughput for r in ok]}
                rows.append(ComparisonRow(case_name, found_faces[case_name], kind, c, summary, top_local,
                                          [r.throughput for r in local[(case_name, kind, c)]]))
            sweeps.append(Sweep(name=f"{case_name} {kind}", input_kind=kind, shared_memory="none",
                                images=[image.name], results=merged, settings={**variant.to_dict(), "rounds": rounds}))
    return rows, sweeps, found_faces


def comparison_table(rows: Sequence[ComparisonRow]) -> str:
    header = ["case", "faces", "input", "conc.", "served fr/s", "served p50 ms", "served p99 ms",
              "in-process fr/s", "in-proc p50 ms", "in-proc p99 ms", "served / in-process",
              "CPU ms/frame served / in-proc"]
    body = []
    for r in rows:
        s, i = r.served or {}, r.inprocess
        cpu_s = s.get("cpu_ms")
        cpu_i = i.cpu_ms if i else None
        body.append([r.case, r.faces, r.kind, r.concurrency,
                     f"{s['throughput']:.1f}" if s else "failed", ms(s.get("p50_us")), ms(s.get("p99_us")),
                     f"{i.throughput:.1f}" if i else "-", ms(i.p50_us if i else None), ms(i.p99_us if i else None),
                     f"{r.ratio:.2f}" if r.ratio is not None else "-",
                     f"{cpu_s:.1f} / {cpu_i:.1f}" if cpu_s and cpu_i else "-"])
    return markdown_table(header, body)


def budget_summary(rows: Sequence[ComparisonRow]) -> str:
    """Best served / best in-process per case and input, and the 20-face / 1-face cost."""
    groups: dict[tuple[str, str], list[ComparisonRow]] = {}
    for r in rows:
        groups.setdefault((r.case, r.kind), []).append(r)
    body = []
    best_served: dict[tuple[str, str], ComparisonRow] = {}
    for (case, kind), group in groups.items():
        served = [r for r in group if r.served]
        if not served:
            continue
        top_s = max(served, key=lambda r: r.served["throughput"])
        top_i = max(group, key=lambda r: r.inprocess.throughput if r.inprocess else 0)
        best_served[(case, kind)] = top_s
        ratio = top_s.served["throughput"] / top_i.inprocess.throughput
        body.append([case, kind, f"{top_s.served['throughput']:.1f} (c{top_s.concurrency})",
                     f"{top_i.inprocess.throughput:.1f} (c{top_i.concurrency})", f"{ratio:.2f}",
                     "yes" if ratio >= 0.85 else "NO"])
    text = markdown_table(["case", "input", "best served fr/s", "best in-process fr/s", "ratio", ">= 0.85"], body)
    cost_rows = []
    for kind in sorted({k for _, k in groups}):
        one, twenty = best_served.get(("faces1", kind)), best_served.get(("faces20", kind))
        if not one or not twenty:
            continue
        c1 = {r.case: r for r in rows if r.kind == kind and r.concurrency == 1 and r.served}
        throughput_cost = one.served["throughput"] / twenty.served["throughput"]
        latency_cost = (c1["faces20"].served["p50_us"] / c1["faces1"].served["p50_us"]
                        if "faces1" in c1 and "faces20" in c1 else None)
        cost_rows.append([kind, f"{throughput_cost:.2f}", f"{latency_cost:.2f}" if latency_cost else "-",
                          "yes" if throughput_cost <= 4 and (latency_cost or 0) <= 4 else "NO"])
    if cost_rows:
        text += "\n\n" + markdown_table(
            ["input", "20-face / 1-face cost (best throughput)", "20-face / 1-face p50 at c1", "<= 4x"], cost_rows)
    return text


# --------------------------------------------------------------------------------------
# Tuning.
# --------------------------------------------------------------------------------------

D, A, PRE, POST = contract.DETECTOR, contract.ATTRIBUTES, contract.PREPROCESS, contract.POSTPROCESS

def _preset(name: str, detectors: int, detector_threads: int, **changes) -> Variant:
    """A tuning variant with the detector's instances and threads spelt out, so a name
    means the same settings whatever the shipped defaults are."""
    counts = {D: detectors, **changes.pop("instance_counts", {})}
    threads = {D: detector_threads, **changes.pop("ort_threads", {})}
    return Variant(name, instance_counts=counts, ort_threads=threads, **changes)


PRESETS: dict[str, Variant] = {v.name: v for v in (
    Variant("shipped"),
    # stage 1: one change at a time from the settings before tuning (detector x1, 2 threads)
    _preset("det1-ort2", 1, 2),
    _preset("det1-ort1", 1, 1),
    _preset("det1-ort2-attr-ort2", 1, 2, ort_threads={A: 2}),
    _preset("det2-ort1", 2, 1),
    _preset("det1-ort2-pre2", 1, 2, instance_counts={PRE: 2}),
    _preset("det1-ort2-post2", 1, 2, instance_counts={POST: 2}),
    _preset("det1-ort2-pre2-post2", 1, 2, instance_counts={PRE: 2, POST: 2}),
    _preset("det1-ort2-detdelay2ms", 1, 2, max_queue_delay_us={D: 2000}, preferred_batch_sizes={D: (2, 4)}),
    _preset("det1-ort2-attrdelay1ms", 1, 2, max_queue_delay_us={A: 1000}),
    # stage 2: around the winner of stage 1 (detector x2, 1 thread each)
    _preset("det2-ort1-detdelay2ms", 2, 1, max_queue_delay_us={D: 2000}, preferred_batch_sizes={D: (2,)}),
    _preset("det2-ort1-attrdelay1ms", 2, 1, max_queue_delay_us={A: 1000}),
    _preset("det2-ort1-pre2", 2, 1, instance_counts={PRE: 2}),
    # stage 3: fewer process hops (repository.fuse_steps), two instances of the fused model
    Variant("fused3-x2", instance_counts={repository.fused_name((PRE, D, POST)): 2}, fuse=(PRE, D, POST)),
    Variant("fused4-x2", instance_counts={repository.fused_name((PRE, D, POST, A)): 2}, fuse=(PRE, D, POST, A)),
    Variant("fused4-x3", instance_counts={repository.fused_name((PRE, D, POST, A)): 3}, fuse=(PRE, D, POST, A)),
)}
"""The tuning grid. Each variant differs from its stage's starting point in one respect
(or two that belong together: two detector instances share the cores with one thread
each)."""

PRESET_GROUPS: dict[str, tuple[str, ...]] = {
    "stage1": ("det1-ort2", "det1-ort1", "det1-ort2-attr-ort2", "det2-ort1", "det1-ort2-pre2", "det1-ort2-post2",
               "det1-ort2-pre2-post2", "det1-ort2-detdelay2ms", "det1-ort2-attrdelay1ms"),
    "stage2": ("det1-ort2", "det1-ort1", "det2-ort1", "det2-ort1-detdelay2ms", "det2-ort1-attrdelay1ms",
               "det2-ort1-pre2"),
    "attributes": ("det1-ort2", "det1-ort2-attr-ort2", "det1-ort2-attrdelay1ms", "det1-ort2-post2",
                   "det1-ort2-pre2-post2", "det1-ort2-detdelay2ms"),
    "attributes2": ("det1-ort2", "det1-ort1", "det2-ort1", "det2-ort1-attrdelay1ms"),
    "fusion": ("shipped", "fused3-x2", "fused4-x2", "fused4-x3"),
}
"""Named sets of presets: the grids behind docs/performance.md."""


def expand_presets(names: Sequence[str]) -> list[Variant]:
    """Preset names and group names -> variants (in order, without repeats)."""
    chosen: list[str] = []
    for name in names:
        for item in PRESET_GROUPS.get(name, (name,)):
            if item not in PRESETS:
                raise KeyError(f"unknown preset {item!r}; presets: {list(PRESETS)}; groups: {list(PRESET_GROUPS)}")
            if item not in chosen:
                chosen.append(item)
    return [PRESETS[n] for n in chosen]


def best_of(rounds: Sequence[Sweep]) -> Sweep:
    """One sweep from repeated ones: per load point, the round with the highest
    throughput (a shared machine only ever slows a round down), the throughput of
    every round kept in the row's ``extra["rounds"]``."""
    first = rounds[0]
    merged = []
    for index, result in enumerate(first.results):
        candidates = [r.results[index] for r in rounds if index < len(r.results)]
        ok = [c for c in candidates if c.ok]
        if not ok:
            merged.append(result)
            continue
        best = max(ok, key=lambda c: c.row.throughput)
        best.row.extra["rounds"] = ",".join(f"{c.row.throughput:.1f}" if c.ok else "failed" for c in candidates)
        merged.append(best)
    return Sweep(name=first.name, input_kind=first.input_kind, shared_memory=first.shared_memory,
                 images=first.images, results=merged, settings={**first.settings, "rounds": len(rounds)})


def tune(
    perf: PerfAnalyzer,
    out_dir: Path,
    variants: Sequence[Variant],
    *,
    case: str = "faces1",
    kind: str = "raw",
    concurrency: Sequence[int] = (1, 4, 16),
    measurement: Measurement | None = None,
    rounds: int = 2,
    progress: bool = True,
    log=print,
) -> list[Sweep]:
    """One sweep per variant on one case's frame, ``rounds`` times. Every variant's
    server is started first and held, and the rounds visit them in turn, so slow
    spells of a shared machine spread over all variants; each point keeps its best
    round (``best_of``)."""
    chosen = CASES[case]
    image = bench_inputs.sample_images([chosen.image])[0]
    data = bench_inputs.write_input_data(out_dir / "inputs" / f"{case}-{kind}.json", [image], kind)
    with contextlib.ExitStack() as stack:
        servers = []
        for base in variants:
            variant = chosen.variant(base).with_(name=base.name)
            log(f"starting {variant.name}: {variant.describe()}")
            servers.append((variant, stack.enter_context(serve_variant(variant, out_dir))))
        measured: dict[tuple[str, int], list] = {}
        for round_index in range(rounds):
            for c in concurrency:  # every variant at one load, then the next load
                log(f"round {round_index + 1}/{rounds}: concurrency {c}")
                for variant, server in servers:
                    sweep = run_sweep(
                        perf, server.grpc_url, data, [LoadPoint(concurrency=c)],
                        out_dir / "perf" / f"round{round_index + 1}", f"{variant.name} {case} {kind} c{c}",
                        input_kind=kind, images=[image.name], measurement=measurement, settings=variant.to_dict(),
                        progress=progress, warmup_requests=None if round_index == 0 else 2 * c,
                        server_pid=server.pid, metrics_url=server.metrics_url)
                    measured.setdefault((variant.name, c), []).append(sweep.results[0])
    sweeps = []
    for variant, _ in servers:
        merged = []
        for c in concurrency:
            candidates = measured[(variant.name, c)]
            ok = [r for r in candidates if r.ok]
            best = max(ok, key=lambda r: r.row.throughput) if ok else candidates[0]
            if ok:
                best.row.extra["rounds"] = ",".join(f"{r.row.throughput:.1f}" for r in ok)
                cpu = [r.server_cpu_ms for r in ok if r.server_cpu_ms]
                if cpu:
                    best.row.extra["cpu_ms_min"] = f"{min(cpu):.2f}"
            merged.append(best)
        sweeps.append(Sweep(name=f"{variant.name} {case} {kind}", input_kind=kind, shared_memory="none",
                            images=[image.name], results=merged, settings={**variant.to_dict(), "rounds": rounds}))
    return sweeps


def tuning_table(sweeps: Sequence[Sweep], concurrency: Sequence[int] = (1, 4, 16)) -> str:
    header = ["variant", "settings", *(f"fr/s c{c}" for c in concurrency), "best fr/s", "p50 / p99 ms at best",
              "server CPU ms/frame (lowest)"]
    body = []
    for sweep in sweeps:
        at = {r.point.concurrency: r for r in sweep.ok_results()}
        best = sweep.best()
        body.append([
            sweep.settings.get("name", sweep.name), sweep.settings.get("description", ""),
            *(f"{at[c].row.throughput:.1f}" if c in at else "-" for c in concurrency),
            f"{best.row.throughput:.1f} (c{best.point.concurrency})" if best else "-",
            f"{ms(best.row.p50_us)} / {ms(best.row.p99_us)}" if best else "-",
            min((float(r.row.extra["cpu_ms_min"]) for r in sweep.ok_results() if "cpu_ms_min" in r.row.extra),
                default=None),
        ])
    for row in body:
        row[-1] = "-" if row[-1] is None else f"{row[-1]:.1f}"
    return markdown_table(header, body)


# --------------------------------------------------------------------------------------
# Transport: encoded vs raw, shared memory vs gRPC payloads.
# --------------------------------------------------------------------------------------


def transport(
    perf: PerfAnalyzer,
    out_dir: Path,
    *,
    case: str = "faces1",
    concurrency: Sequence[int] = (1, 4, 16),
    base: Variant | None = None,
    measurement: Measurement | None = None,
    rounds: int = 2,
    progress: bool = True,
    log=print,
) -> list[Sweep]:
    """Raw and encoded frames, each with and without ``--shared-memory system``,
    ``rounds`` times (best round per point).

    perf_analyzer's shared-memory mode refuses optional inputs, so each input kind is
    served by a variant whose ensemble takes only that input, as a required one."""
    base = base or Variant()
    chosen = CASES[case]
    image = bench_inputs.sample_images([chosen.image])[0]
    with contextlib.ExitStack() as stack:
        setups = []
        for kind in ("raw", "encoded"):
            tensor = bench_inputs.KIND_TENSOR[kind]
            variant = chosen.variant(base).with_(name=f"{base.name}-{kind}-only", required_input=tensor)
            server = stack.enter_context(serve_variant(variant, out_dir))
            data = bench_inputs.write_input_data(out_dir / "inputs" / f"{case}-{kind}-required.json", [image], kind,
                                                 variant.models())
            setups.append((kind, variant, server, data))
        by_setup: dict[tuple[str, str], list[Sweep]] = {}
        for round_index in range(rounds):
            for kind, variant, server, data in setups:
                for shm in ("none", "system"):
                    log(f"round {round_index + 1}/{rounds}: {kind} frames, shared memory {shm}")
                    by_setup.setdefault((kind, shm), []).append(run_sweep(
                        perf, server.grpc_url, data, points(concurrency), out_dir / "perf" / f"round{round_index + 1}",
                        f"{kind} shm-{shm}", input_kind=kind, images=[image.name], shared_memory=shm,
                        measurement=measurement, settings=variant.to_dict(), progress=progress,
                        warmup_requests=None if round_index == 0 else 8,
                        server_pid=server.pid, metrics_url=server.metrics_url))
    return [best_of(sweeps) for sweeps in by_setup.values()]


def transport_table(sweeps: Sequence[Sweep], concurrency: Sequence[int] = (1, 4, 16)) -> str:
    header = ["input", "shared memory", *(f"fr/s c{c}" for c in concurrency),
              *(f"p50 ms c{c}" for c in concurrency), "best fr/s"]
    body = []
    for sweep in sweeps:
        at = {r.point.concurrency: r for r in sweep.ok_results()}
        best = sweep.best()
        body.append([sweep.input_kind, sweep.shared_memory,
                     *(f"{at[c].row.throughput:.1f}" if c in at else "failed" for c in concurrency),
                     *(ms(at[c].row.p50_us) if c in at else "-" for c in concurrency),
                     f"{best.row.throughput:.1f}" if best else "-"])
    return markdown_table(header, body)


def variant_from_dict(data: Mapping) -> Variant:
    return Variant(name=data.get("name", "custom"), instance_counts=dict(data.get("instance_counts", {})),
                   ort_threads=dict(data.get("ort_threads", {})),
                   max_queue_delay_us=dict(data.get("max_queue_delay_us", {})),
                   preferred_batch_sizes={k: tuple(v) for k, v in data.get("preferred_batch_sizes", {}).items()},
                   postprocess=dict(data.get("postprocess", {})), required_input=data.get("required_input"),
                   fuse=tuple(data.get("fuse") or ()))


__all__ = ["CASES", "PRESETS", "PRESET_GROUPS", "expand_presets", "Case", "ComparisonRow", "Variant", "asdict", "budget_summary", "comparison_table",
           "count_faces", "forced_faces", "overhead_budget", "serve_variant", "transport", "transport_table", "tune",
           "tuning_table", "variant_from_dict"]
