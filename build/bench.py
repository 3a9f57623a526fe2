"""Benchmarks of the served pipeline (a thin wrapper of ``omniface bench``).

    python build/bench.py sweep     [--url HOST:PORT] [--input-kind raw encoded] [--concurrency 1 4 16] ...
    python build/bench.py compare   # the overhead budget: served vs in-process, same run
    python build/bench.py tune      # one sweep per repository variant
    python build/bench.py transport # raw vs encoded, with and without system shared memory
    python build/bench.py soak --duration 600 --concurrency 4

See docs/performance.md for the commands behind the committed settings.
"""

from __future__ import annotations

import sys

from omniface.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
