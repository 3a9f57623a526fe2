"""The report: Markdown tables and PNG plots (matplotlib, Agg backend, no display)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from omniface import contract
from omniface.bench.sweep import Sweep

STEP_ORDER: tuple[str, ...] = tuple(step.model_name for step in contract.MODELS[contract.FACE_ANALYSIS].steps)
"""The ensemble's steps in pipeline order (the composing models perf_analyzer reports)."""


def ms(us: float | None, digits: int = 1) -> str:
    return "-" if us is None else f"{us / 1000:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def sweep_table(sweeps: Sequence[Sweep]) -> str:
    """One row per load point: throughput, client latency percentiles, and the server
    time (queue + compute) of each ensemble step."""
    header = ["sweep", "load", "infer/s", "p50 ms", "p90 ms", "p99 ms", "avg ms",
              *(f"{s} ms" for s in STEP_ORDER), "server CPU ms/frame", "client CPU ms/frame", "stable"]
    rows = []
    for sweep in sweeps:
        for result in sweep.results:
            if not result.ok:
                rows.append([sweep.name, result.point.label, "failed", *[""] * (len(header) - 3)])
                continue
            row = result.row
            steps = [ms(result.steps[s].server_us) if s in result.steps else "-" for s in STEP_ORDER]
            rows.append([sweep.name, result.point.label, f"{row.throughput:.1f}", ms(row.p50_us), ms(row.p90_us),
                         ms(row.p99_us), ms(row.avg_us), *steps,
                         "-" if result.server_cpu_ms is None else f"{result.server_cpu_ms:.1f}",
                         "-" if result.client_cpu_ms is None else f"{result.client_cpu_ms:.1f}",
                         "yes" if result.stable else "count"])
    return markdown_table(header, rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write and close a figure (the tail every plot here shares)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_throughput_latency(sweeps: Sequence[Sweep], path: Path, title: str = "Throughput against latency") -> Path:
    """Per sweep, p50 (dashed) and p99 (solid) latency against throughput, points
    labelled with their load (c4: concurrency 4, r20: 20 requests/s)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for index, sweep in enumerate(sweeps):
        ok = sweep.ok_results()
        if not ok:
            continue
        color = f"C{index % 10}"
        x = [r.row.throughput for r in ok]
        ax.plot(x, [(r.row.p99_us or 0) / 1000 for r in ok], "-o", color=color, label=f"{sweep.name} p99")
        ax.plot(x, [(r.row.p50_us or 0) / 1000 for r in ok], "--", color=color, alpha=0.7, label=f"{sweep.name} p50")
        for r in ok:
            ax.annotate(r.point.label, (r.row.throughput, (r.row.p99_us or 0) / 1000), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=color)
    ax.set_xlabel("throughput (frames/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path)


def plot_steps(sweeps: Sequence[Sweep], path: Path, title: str = "Time per ensemble step") -> Path:
    """Stacked bars per load point: each composing model's queue + compute time and,
    on top, what the client waited beyond the steps (gRPC, ensemble scheduling)."""
    plt = _pyplot()
    sweeps = [s for s in sweeps if s.ok_results()]
    count = max(1, len(sweeps))
    columns = min(count, 3)
    rows = (count + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    for ax, sweep in zip(axes.flat, sweeps):
        ok = sweep.ok_results()
        labels = [r.point.label for r in ok]
        bottom = [0.0] * len(ok)
        for index, step in enumerate(STEP_ORDER):
            values = [r.steps[step].server_us / 1000 if step in r.steps else 0.0 for r in ok]
            ax.bar(labels, values, bottom=bottom, color=f"C{index}", label=step)
            bottom = [b + v for b, v in zip(bottom, values)]
        rest = [max(0.0, (r.row.avg_us or 0) / 1000 - b) for r, b in zip(ok, bottom)]
        ax.bar(labels, rest, bottom=bottom, color="0.8", hatch="//", label="outside the steps")
        ax.set_title(sweep.name, fontsize=9)
        ax.set_ylabel("ms per request (mean)")
        ax.grid(True, axis="y", alpha=0.3)
    if sweeps:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return _save(plt, fig, path)


def plot_soak(samples: Sequence[dict], segments: Sequence[dict], path: Path, title: str = "Soak") -> Path:
    """Resident memory of the server's process tree over time, and throughput per segment."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=110, sharex=True)
    if samples:
        t0 = samples[0]["t"]
        top.plot([(s["t"] - t0) / 60 for s in samples], [s["rss_kib"] / 1024 for s in samples], label="RSS (sum)")
        if all(s.get("pss_kib") for s in samples):
            top.plot([(s["t"] - t0) / 60 for s in samples], [s["pss_kib"] / 1024 for s in samples], label="PSS")
        top.set_ylabel("MiB")
        top.legend(fontsize=8)
        top.grid(True, alpha=0.3)
        if segments:
            bottom.step([(seg["end_t"] - t0) / 60 for seg in segments], [seg["throughput"] for seg in segments],
                        where="pre", label="frames/s")
    bottom.set_xlabel("minutes")
    bottom.set_ylabel("frames/s")
    bottom.grid(True, alpha=0.3)
    fig.suptitle(title)
    return _save(plt, fig, path)


def write_report(out_dir: Path, title: str, sweeps: Sequence[Sweep], sections: Sequence[str] = (),
                 data: dict | None = None) -> Path:
    """``report.md`` (sections, the sweep table, the plots), ``throughput_latency.png``,
    ``steps.png`` and ``results.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", *sections]
    if sweeps:
        plot_throughput_latency(sweeps, out_dir / "throughput_latency.png")
        plot_steps(sweeps, out_dir / "steps.png")
        parts += ["## Sweeps", sweep_table(sweeps),
                  "Step columns: mean server time per request (queue + compute) of each composing model. "
                  "Server CPU: CPU time of tritonserver and its python-backend stubs per completed request, "
                  "over the whole perf_analyzer run; client CPU: perf_analyzer's. "
                  "stable = perf_analyzer's time windows converged; count = measured over a fixed request count.",
                  "![throughput against latency](throughput_latency.png)", "![time per step](steps.png)"]
    (out_dir / "report.md").write_text("\n\n".join(parts) + "\n")
    payload = {"title": title, "sweeps": [s.to_dict() for s in sweeps], **(data or {})}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    return out_dir / "report.md"
