"""Run one benchmark stage in a fresh process and report its result and peak memory.

``python -m benchmarks.child REQUEST.json RESULT.json``: REQUEST holds ``{"stage": name,
"kwargs": {...}}``. RESULT gets the stage's dict plus ``peak_rss_mb`` (this process),
``children_peak_rss_mb`` (the largest of its finished child processes, e.g. engine workers)
and ``import_s`` (interpreter start to the stage call is measured by the parent). A fresh
process per stage keeps memory peaks, imported modules and thread pools from leaking
between stages.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _peak_mb(who: int) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024.0, 1)  # Linux reports KiB


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    start = time.perf_counter()
    from benchmarks.stages import STAGES

    import_s = time.perf_counter() - start
    result = STAGES[request["stage"]](**request["kwargs"])
    result.update(
        import_s=round(import_s, 3),
        peak_rss_mb=_peak_mb(resource.RUSAGE_SELF),
        children_peak_rss_mb=_peak_mb(resource.RUSAGE_CHILDREN),
    )
    Path(argv[1]).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
