"""A worker process for the restart tests: python worker_proc.py DB_OR_URL PACKS_DIR [WORKER_ID LEASE_S]
(runs until killed). DB_OR_URL: an SQLite file or a queue URL (sqlite:///..., postgresql://...); with a worker
id, it claims under a lease of LEASE_S seconds that its heartbeat renews."""

import sys
import time
from pathlib import Path

from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry
from fewstep.app.storage import JobStore, store_for_url
from fewstep.app.worker import QueueWorker

if __name__ == "__main__":
    target = sys.argv[1]
    store = store_for_url(target) if "://" in target else JobStore(Path(target))
    registry = load_registry([Path(sys.argv[2])], entry_points=False, builtin=False)
    lease = {"worker_id": sys.argv[3], "lease_s": float(sys.argv[4])} if len(sys.argv) > 4 else {}
    worker = QueueWorker(store, Executor(registry, CacheSet("lru:10")), **lease)
    worker.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(1)
