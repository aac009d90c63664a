"""Time every exercise check on its right answer, as a learner's notebook would run it: once cold (in a fresh
process where only the library's tokenizer and the chapter's modules are loaded, as the chapter has loaded them
by its exercises, so the check's own data and caches are built as they would be the first time) and twice warm.

    OMP_NUM_THREADS=1 python tools/time_exercise_checks.py          # all checks
    python tools/time_exercise_checks.py 07.1 07.3                  # some

Prints one line per check (cold, then the median of the warm runs) and the slowest. The target is under 5 s
cold on a busy 2-core laptop; the checks train on one thread (nanogpt_lib.course.exercises.one_thread).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_ONE = """
import json, sys, time
sys.path[:0] = [{root!r}, {tests!r}]
from exercise_answers import right_answer
from nanogpt_lib.course.exercises import verdict
from nanogpt_lib.tokenizer import get_tokenizer
get_tokenizer()  # loaded by every chapter before its exercises
__import__("nanogpt_lib.course.exercises.ch" + {id!r}[:2])  # and the modules its checks use (explorers, sampler)
answer = right_answer({id!r})
times = []
for _ in range(3):
    start = time.perf_counter()
    ok, why = verdict({id!r}, answer)
    times.append(time.perf_counter() - start)
    assert ok is True, why
print(json.dumps(times))
"""


def time_one(id: str) -> list[float]:
    code = _ONE.format(root=str(ROOT), tests=str(ROOT / "tests"), id=id)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    sys.path[:0] = [str(ROOT / "tests")]
    from exercise_answers import ids

    chosen = argv or ids()
    rows = []
    for id in chosen:
        times = time_one(id)
        rows.append((id, times[0], statistics.median(times[1:])))
        print(f"{id}: cold {times[0]:5.2f} s, warm {rows[-1][2]:5.2f} s", flush=True)
    slowest = max(rows, key=lambda r: r[1])
    print(f"slowest: {slowest[0]} at {slowest[1]:.2f} s cold ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main(sys.argv[1:])
