"""Point-in-time figures: resolving a time to a position, and ``projections rebuild --until … --into DIR``.

    .venv/bin/python bench/bench_point_in_time.py                 # SQLite, 50,000 events
    .venv/bin/python bench/bench_point_in_time.py --events 200000

A SQLite log is filled as ``bench_log_transfer`` fills it (external events of ~500 bytes, a backend in every
hundred). Then, in this process, through the functions the command calls:

- resolve: a time after the last event → its position (``position_at`` reads the whole log: the worst case);
- copy: ``copy_log`` of the whole log into an empty SQLite log (the rebuild's first part);
- rebuild: ``rebuild_into`` of the whole log into a fresh directory: copy, every read model built there,
  file contents brought along (none here) — what ``chainloom projections rebuild --until N --into DIR`` does,
  less the progress bar.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_log_transfer import fill, sqlite_log  # noqa: E402
from chainloom.infra.log_transfer import copy_log  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from chainloom.projections.point_in_time import position_at, rebuild_into  # noqa: E402


def timed(what, *args):
    started, cpu = time.perf_counter(), time.process_time()
    result = what(*args)
    return result, time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-pit-") as scratch:
        root = Path(scratch)
        live = sqlite_log(root / "live")
        fill(live, args.events)
        head = live.head()
        print(f"log: {head} events (SQLite)")
        (position, _), wall, cpu = timed(position_at, live, time.time_ns() + 10**12)
        print(f"resolve a time: {head / wall:,.0f} events/s ({wall:.2f} s, cpu {cpu:.2f} s) → position {position}")
        target = sqlite_log(root / "copy")
        copied, wall, cpu = timed(copy_log, live, target, head)
        print(f"copy_log:       {copied / wall:,.0f} events/s ({wall:.2f} s, cpu {cpu:.2f} s)")
        target.close()
        live.close()
        settings = Settings(data_dir=root / "live", database_url="")
        point, wall, cpu = timed(rebuild_into, settings, str(head), root / "then")
        print(
            f"rebuild --until {head} --into: {point.events / wall:,.0f} events/s ({wall:.2f} s, cpu {cpu:.2f} s):"
            " copy, every read model built, vectors compacted"
        )


if __name__ == "__main__":
    main()
