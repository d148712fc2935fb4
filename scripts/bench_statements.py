"""What the embedded store costs per image, counted (not timed): SQL statements, driver calls
and hand-offs to aiosqlite's thread of ``skygate scan --workers 1``.

    .venv/bin/python scripts/bench_statements.py [--images 6] [--size 1024] [--by-site]

Runs ``skygate scan --workers 1`` in this process on ``--images`` generated camera-like JPEGs
(scripts/bench_methods.py's generator) on a fresh data folder (the embedded SQLite store,
``attribution_grid`` 0), and counts, inside each file's scan (``skygate.batch.scan_file``:
start-up and warm-up left out), every statement SQLAlchemy sends (by verb and table) and
every call of the driver (cursor, execute, fetchall, close, commit, rollback): on
aiosqlite's thread each is a hand-off between the event loop and that thread, and what they
cost in CPU, not the statements' own work in SQLite, dominates on small rows; a scan's
connections run them inline (storage/inline_sqlite.py): no hand-off. ``--by-site``: each
statement also by the SkyGate functions that sent it. Counts do not drift with the
machine's load, unlike the timings of scripts/bench_cpu.py: read them side by side.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

# Deferred imports: the counters hook SQLAlchemy and aiosqlite only once installed, and the scan
# is imported after them so that its engine is the one counted.

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_cpu import run_cli, scan_in_this_process  # noqa: E402

_VERB = re.compile(r"(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s+(.*)", re.S)
_OURS = ("/service/", "/storage/", "/skygate/")


def statement_kind(sql: str) -> str:
    """``SELECT uploads``, ``INSERT INTO blob_refs``, …; anything else by its first words."""
    text = " ".join(sql.split())
    match = _VERB.match(text)
    if not match:
        return text[:40]
    verb, rest = match.groups()
    if verb == "SELECT":
        table = re.search(r"FROM (\w+)", text)
        return f"SELECT {table.group(1) if table else '?'}"
    return f"{verb} {rest.split()[0]}"


def senders(depth: int = 3) -> str:
    """The SkyGate functions on the stack of the coroutine that sent this statement (the
    greenlet SQLAlchemy runs the driver in is a child of the coroutine's)."""
    import greenlet

    parent = greenlet.getcurrent().parent
    frame = parent.gr_frame if parent is not None else None
    names = []
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _OURS):
            names.append(f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(names[:depth])


def install_counters(counting: dict, by_site: bool) -> tuple[collections.Counter, ...]:
    """Count statements (and, ``by_site``, their senders), hand-offs and inline driver calls
    while ``counting["on"]``; returns the four counters."""
    import aiosqlite.core
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from storage.inline_sqlite import InlineConnection

    statements: collections.Counter = collections.Counter()
    sites: collections.Counter = collections.Counter()
    handoffs: collections.Counter = collections.Counter()
    inline_calls: collections.Counter = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(_conn, _cursor, statement, _params, _context, _many):
        if counting["on"]:
            kind = statement_kind(statement)
            statements[kind] += 1
            if by_site:
                sites[(kind, senders())] += 1

    class CountedQueue:
        """aiosqlite's queue to its thread: every call put on it is one hand-off (SQLAlchemy's
        isolation-level setter puts its own, bypassing Connection._execute)."""

        def __init__(self, queue):
            self._queue = queue

        def put_nowait(self, item):
            if counting["on"]:
                call = getattr(item[1], "func", item[1])
                handoffs[getattr(call, "__name__", "other")] += 1
            self._queue.put_nowait(item)

        def __getattr__(self, name):
            return getattr(self._queue, name)

    connection_init = aiosqlite.core.Connection.__init__

    def counted_init(self, *a, **kw):
        connection_init(self, *a, **kw)
        self._tx = CountedQueue(self._tx)

    aiosqlite.core.Connection.__init__ = counted_init
    run_inline = InlineConnection._execute

    async def counted_inline(self, fn, *args, **kwargs):
        if counting["on"]:
            inline_calls[getattr(fn, "__name__", "other")] += 1
        return await run_inline(self, fn, *args, **kwargs)

    InlineConnection._execute = counted_inline
    return statements, sites, handoffs, inline_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--by-site", action="store_true")
    args = parser.parse_args()
    counting = {"on": False}
    statements, sites, handoffs, inline_calls = install_counters(counting, args.by_site)

    from skygate import batch

    scan_file = batch.scan_file

    def counted_scan(path):
        counting["on"] = True
        try:
            return scan_file(path)
        finally:
            counting["on"] = False

    batch.scan_file = counted_scan
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        run_cli(scan_in_this_process(tmp, images=args.images, size=args.size, grid="0"))
    n = args.images
    print(f"{n} camera-like JPEGs of {args.size}x{args.size}, per image:")
    print(f"  SQL statements: {sum(statements.values()) / n:.1f}")
    for kind, count in statements.most_common():
        print(f"    {count / n:5.1f}  {kind}")
    if args.by_site:
        for (kind, where), count in sorted(sites.items()):
            print(f"    {count / n:5.1f}  {kind:<30} {where}")
    print(f"  hand-offs to aiosqlite's thread: {sum(handoffs.values()) / n:.1f}")
    for call, count in handoffs.most_common():
        print(f"    {count / n:5.1f}  {call}")
    print(f"  driver calls run inline (no hand-off): {sum(inline_calls.values()) / n:.1f}")
    for call, count in inline_calls.most_common():
        print(f"    {count / n:5.1f}  {call}")


if __name__ == "__main__":
    main()
