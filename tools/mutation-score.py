"""Print mutmut's score per module after `mutmut run` (tox -e mutation), from mutants/**/*.py.meta.

killed = mutants some test failed on (a timeout counts: the mutant made a test hang). Every other
mutant counts against the score: survived, no tests (no fast test calls that function), suspicious, ...
Usage: python tools/mutation-score.py [--fail-under PCT] [--survivors]
Exit status 1 when a module scores under --fail-under, or when mutants are left unchecked.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

# mutmut's exit codes (mutmut/stats.py, status_by_exit_code)
KILLED = {1: "killed", 3: "killed", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", 36: "timeout"}
OTHER = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious", -11: "segfault", -9: "segfault"}


def status(code: int | None) -> str:
    if code is None:
        return "not checked"
    return KILLED.get(code) or OTHER.get(code) or "suspicious"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-under", type=float, default=0.0, metavar="PCT")
    parser.add_argument("--survivors", action="store_true", help="list the mutants not killed (see: mutmut show NAME)")
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    args = parser.parse_args()

    metas = sorted(args.mutants.rglob("*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.mutants}/: run `mutmut run` first", file=sys.stderr)
        return 1
    rows = []
    failing = False
    print(f"{'module':<40} {'killed':>7} {'total':>6} {'score':>7}  not killed")
    for meta in metas:
        module = meta.relative_to(args.mutants).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        statuses = {name: status(code) for name, code in codes.items()}
        counts = Counter(statuses.values())
        killed = counts["killed"] + counts["timeout"]
        total = len(statuses)
        score = 100.0 * killed / total if total else 100.0
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in ("killed", "timeout"))
        print(f"{module:<40} {killed:>7} {total:>6} {score:>6.1f}%  {others}")
        rows.append((module, statuses))
        if score < args.fail_under or counts["not checked"]:
            failing = True
    if args.survivors:
        for module, statuses in rows:
            for name, state in sorted(statuses.items()):
                if state not in ("killed", "timeout"):
                    print(f"  {module}: {state:<12} {name}")
    if failing:
        print(f"FAIL: a module scores under {args.fail_under:g}% or has unchecked mutants", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
