"""`pytest-madengine`: the results history in a terminal (list, show, compare, trend, import)."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from .chart import Point, trend_svg
from .importer import imported_runs
from .noise import DEFAULT_K, mad
from .records import StorageError, StoredResult, default_url
from .store import Store


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _value(result: StoredResult) -> str:
    return f"{result.performance:g}" if result.performance is not None else ""


def cmd_list(store: Store, _: argparse.Namespace) -> str:
    rows = []
    for run in store.runs():
        found = store.run(run.run_id)
        stored = found[1] if found else []
        ok = sum(1 for r in stored if r.status == "SUCCESS")
        started = run.started.strftime("%Y-%m-%d %H:%M") if run.started else ""
        rows.append([run.run_id, started, run.host, run.git_commit[:12], f"{ok}/{len(stored)}", run.source])
    return table(["run", "started", "host", "commit", "success", "source"], rows)


def cmd_show(store: Store, args: argparse.Namespace) -> str:
    found = store.run(args.run)
    if found is None:
        raise LookupError(f"no run {args.run!r} in the history")
    _, stored = found
    return table(
        ["model", "arch", "performance", "metric", "status"],
        [[r.model, r.arch, _value(r), r.metric, r.status] for r in stored],
    )


def cmd_compare(store: Store, args: argparse.Namespace) -> str:
    first, second = store.run(args.run_a), store.run(args.run_b)
    for name, found in ((args.run_a, first), (args.run_b, second)):
        if found is None:
            raise LookupError(f"no run {name!r} in the history")
    assert first is not None and second is not None
    before = {(r.model, r.arch): r for r in first[1]}
    rows = []
    for result in second[1]:
        old = before.get((result.model, result.arch))
        change = ""
        if old and old.performance and result.performance is not None:
            change = f"{(result.performance - old.performance) / abs(old.performance) * 100:+.2f}%"
        rows.append([result.model, result.arch, _value(old) if old else "", _value(result), result.metric, change])
    return table(["model", "arch", args.run_a, args.run_b, "metric", "change"], rows)


def cmd_trend(store: Store, args: argparse.Namespace) -> str:
    stored = [r for r in store.history(args.model, args.arch, last=args.last) if r.performance is not None]
    if not stored:
        raise LookupError(f"no SUCCESS results of {args.model!r} on {args.arch!r} in the history")
    values = [r.performance for r in stored if r.performance is not None]
    rows = [[r.run_id, _value(r), r.metric] for r in stored]
    summary = f"median {statistics.median(values):g}, spread (MAD) {mad(values):g}, n={len(values)}"
    chart = Path(args.chart or f"{args.model.replace('/', '_')}_{args.arch}_trend.svg")
    points = [
        Point(v, f"{r.run_id} {str(r.row.get('git_commit', ''))[:12]}".strip())
        for r, v in zip(stored, values, strict=True)
    ]
    chart.write_text(trend_svg(f"{args.model} on {args.arch}", points, args.k), encoding="utf-8")
    return table(["run", "performance", "metric"], rows) + f"\n{summary}\nchart: {chart}"


def cmd_import(store: Store, args: argparse.Namespace) -> str:
    found = imported_runs(Path(args.perf_csv))
    known = {run.run_id for run in store.runs()}
    fresh = [(run, stored) for run, stored in found if run.run_id not in known]
    for run, stored in fresh:
        store.save(run, stored)
    count = sum(len(stored) for _, stored in fresh)
    return f"imported {len(fresh)} runs, {count} results from {args.perf_csv} ({len(found) - len(fresh)} already there)"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pytest-madengine", description="pytest-madengine's results history")
    top.add_argument(
        "--storage", help="sqlite:///path.db or postgresql://user@host/db (default: .madengine/history.db)"
    )
    sub = top.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the stored runs").set_defaults(run_command=cmd_list)
    show = sub.add_parser("show", help="one run's results")
    show.add_argument("run")
    show.set_defaults(run_command=cmd_show)
    compare = sub.add_parser("compare", help="two runs side by side")
    compare.add_argument("run_a")
    compare.add_argument("run_b")
    compare.set_defaults(run_command=cmd_compare)
    trend = sub.add_parser("trend", help="one model's results over time, and an SVG chart")
    trend.add_argument("model")
    trend.add_argument("--arch", default="gfx942")
    trend.add_argument("--last", type=int, default=20)
    trend.add_argument("--k", type=float, default=DEFAULT_K, help="the noise band's width in MADs")
    trend.add_argument("--chart", help="where the SVG goes (default: <model>_<arch>_trend.svg)")
    trend.set_defaults(run_command=cmd_trend)
    load = sub.add_parser("import", help="a perf.csv history (ours or madengine's), each run in it a run")
    load.add_argument("perf_csv")
    load.set_defaults(run_command=cmd_import)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        store = Store(args.storage or default_url(Path.cwd()))
        try:
            print(args.run_command(store, args))
        finally:
            store.close()
    except (StorageError, LookupError, OSError, ValueError) as exc:
        print(f"pytest-madengine: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
