"""A text progress display for TensorRT's builder phases.

TensorRT reports its optimizer's work through ``IProgressMonitor`` callbacks
(``phase_start(name, parent, steps)``, ``step_complete(name, step)``,
``phase_finish(name)``), from several threads. ``BuildProgress`` turns those events
into one status line (rewritten in place on a terminal, printed once per top-level
phase otherwise); ``omniface.engines.build`` wraps it in the ``trt.IProgressMonitor``
subclass, so this part imports no TensorRT and is tested on its own.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class BuildProgress:
    """Phase tree -> status line. ``cancel()`` makes the next ``step_complete`` return
    False, which asks TensorRT to abandon the build."""

    def __init__(self, label: str, stream: TextIO | None = None, min_interval_s: float = 0.2) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self._phases: dict[str, list] = {}  # name -> [parent, steps, done]
        self._order: list[str] = []
        self._lock = threading.Lock()
        self._last = 0.0
        self._cancelled = False
        self.lines: list[str] = []  # what was printed, for tests and logs

    def cancel(self) -> None:
        self._cancelled = True

    # --- the IProgressMonitor callbacks -------------------------------------------------
    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            self._phases[phase_name] = [parent_phase, max(int(num_steps), 1), 0]
            self._order.append(phase_name)
            top_level = not parent_phase
            self._render(force=top_level)

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            phase = self._phases.get(phase_name)
            if phase is not None:
                phase[2] = min(int(step) + 1, phase[1])
            self._render(force=False)
        return not self._cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            self._phases.pop(phase_name, None)
            if phase_name in self._order:
                self._order.remove(phase_name)
            if not self._phases:
                self._render(force=True, done=True)

    # --- rendering --------------------------------------------------------------------
    def status(self) -> str:
        """`label: Phase 3/10 > Subphase 1/4` for the active phases, outermost first."""
        parts = [f"{name} {self._phases[name][2]}/{self._phases[name][1]}" for name in self._order if name in self._phases]
        return f"{self.label}: " + (" > ".join(parts) if parts else "done")

    def _render(self, force: bool, done: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self.interactive or now - self._last < self.min_interval_s):
            return
        self._last = now
        line = self.status()
        self.lines.append(line)
        if self.interactive:
            end = "\n" if done else ""
            self.stream.write("\r\x1b[2K" + line[:160] + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
