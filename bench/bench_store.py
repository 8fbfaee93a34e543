"""The shared PostgreSQL store beside SQLite: ``python bench/bench_store.py [--json]``.

Method
------
``add_candidate`` of the realistic record of ``bench_storage.py`` (a one-node program with
four demos, about 1.5 KB of JSON) into one run. ``1 proc``: one process appends
``--appends`` records. ``8 procs``: ``--procs`` fresh processes, each with its own
connection, append ``--appends`` records each into the same run at the same time (they
open the store, say ready, and start on a shared signal); the figure is all records over
the wall time from the first start to the last finish (each process times itself). Every
run checks that the history holds every record.

Stores: SQLite (WAL, ``synchronous=NORMAL``: a commit is not flushed to disk) in a temp
folder; PostgreSQL with the server's defaults (every commit flushed to disk before it
returns, what a team's server runs), and the same server with
``?options=-csynchronous_commit%3Doff`` in the URL (commits flushed in the background, a
crash of the server may lose the last ones, never corrupts: SQLite NORMAL's guarantee).
The server is the machine's PostgreSQL (``tests/support/postgres.py`` starts it on a free
loopback port in a temp folder, durable settings), or ``--postgres URL`` (a database you
own: the bench adds its desic tables and one run there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))

from bench_storage import RECORD

WORKER = """
import json, os, sys, time
import desic.storage as ds
url, run_id, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
record = json.loads(sys.argv[5])
store = ds.open(url)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.0005)
start = time.time()
for i in range(n):
    store.add_candidate(run_id, {**record, "index": i})
print(json.dumps([start, time.time()]), flush=True)
store.close()
"""


def append_one_process(url: str, n: int) -> float:
    import desic.storage as ds

    store = ds.open(url)
    run = store.create_run(ds.RunInfo(id=f"bench-{uuid.uuid4().hex[:8]}"))
    start = time.perf_counter()
    for i in range(n):
        store.add_candidate(run.id, {**RECORD, "index": i})
    elapsed = time.perf_counter() - start
    assert len(store.history(run.id)) == n
    store.close()
    return n / elapsed


def append_processes(url: str, n: int, procs: int, root: Path) -> float:
    import desic.storage as ds

    store = ds.open(url)
    run = store.create_run(ds.RunInfo(id=f"bench-{uuid.uuid4().hex[:8]}"))
    go = root / f"go-{run.id}"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, run.id, str(n), str(go), json.dumps(RECORD)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(procs)
    ]
    for w in workers:  # every worker has imported desic and opened the store
        assert w.stdout is not None and w.stdout.readline().strip() == "ready"
    go.touch()
    spans = [json.loads(w.communicate()[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert len(store.history(run.id)) == n * procs
    store.close()
    return n * procs / (max(e for _, e in spans) - min(s for s, _ in spans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=500, help="records per process (default 500)")
    parser.add_argument("--procs", type=int, default=8, help="processes appending at once (default 8)")
    parser.add_argument("--postgres", metavar="URL", help="use this database instead of starting a server")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    server: Any = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.postgres:
            pg = args.postgres
        else:
            from tests.support.postgres import Server

            server = Server(durable=True)
            pg = server.fresh_url()
        sep = "&" if "?" in pg else "?"
        stores = {
            "sqlite": f"sqlite://{root}/bench.db",
            "postgresql": pg,
            "postgresql (synchronous_commit=off)": f"{pg}{sep}options=-csynchronous_commit%3Doff",
        }
        figures: dict[str, dict[str, float]] = {}
        try:
            for name, url in stores.items():
                one = append_one_process(url, args.appends)
                many = append_processes(url, args.appends, args.procs, root)
                figures[name] = {"1 proc": one, f"{args.procs} procs": many}
                print(f"# {name}: {one:.0f} / {many:.0f} appends/s", file=sys.stderr)
        finally:
            if server is not None:
                server.stop()
    if args.json:
        print(json.dumps({"appends": args.appends, "procs": args.procs, "appends_per_second": figures}))
        return
    print(f"appends/s of a ~1.5 KB candidate record ({args.appends} per process)\n")
    print(f"{'store':<38} | {'1 proc':>8} | {f'{args.procs} procs':>8}")
    print(f"{'-' * 38}-+-{'-' * 8}-+-{'-' * 8}")
    for name, row in figures.items():
        print(f"{name:<38} | {row['1 proc']:>8.0f} | {row[f'{args.procs} procs']:>8.0f}")


if __name__ == "__main__":
    main()
