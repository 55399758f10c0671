"""A worker process for the restart tests: python worker_proc.py DB PACKS_DIR (runs until killed)."""

import sys
import time
from pathlib import Path

from fewstep.app.cache import CacheSet
from fewstep.app.executor import Executor
from fewstep.app.registry import load_registry
from fewstep.app.storage import JobStore
from fewstep.app.worker import QueueWorker

if __name__ == "__main__":
    store = JobStore(Path(sys.argv[1]))
    registry = load_registry([Path(sys.argv[2])], entry_points=False, builtin=False)
    worker = QueueWorker(store, Executor(registry, CacheSet("lru:10")))
    worker.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        time.sleep(1)
