"""Benchmarks of the served pipeline: ``omniface bench`` (the ``bench`` extra).

- ``perf``: find the real ``perf_analyzer`` of the tritonclient 2.51 wheel and the
  libraries it links (libb64 from the system, libcudart.so.12 from the
  nvidia-cuda-runtime-cu12 wheel), build its command lines, run one load point and
  parse its CSV files, the composing models' files included;
- ``inputs``: perf_analyzer input-data JSON written from real images, encoded
  (``IMAGE_BYTES``) or raw (``IMAGE_RAW``), tensor names and shapes from the contract;
- ``sweep``: a sweep over concurrency (or request rate), one perf_analyzer run per point;
- ``inprocess``: the same load on ``LocalPipeline`` in this process (the overhead budget);
- ``report``: a Markdown table and PNG plots (throughput against latency, time per step);
- ``soak``: a long run with the server's resident memory sampled from ``/proc``;
- ``experiments``: the runs behind docs/performance.md (overhead budget, tuning grid);
- ``cli``: ``omniface bench ...`` and ``build/bench.py``.

All traffic goes to loopback servers the harness starts itself, or to ``--url``.
"""

from __future__ import annotations
