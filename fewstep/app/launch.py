"""``fewstep run --nproc N``: N copies of a command under torch's elastic launcher (what ``torchrun`` runs).

The launcher (``torch.distributed.launcher.elastic_launch``, one node, a c10d rendezvous on localhost) starts N
worker processes with torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/
``MASTER_PORT``); the trainer nodes join the process group when they start training
(``fewstep.nodes.core.train.distributed``). Its agent watches the workers: when one exits with an error or is
killed, it stops the others and the launch fails with :class:`LaunchFailed`, which names the rank, its exit code
or signal and the worker's own error message - the job ends, no rank hangs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

WORKER_ENV = "TORCHELASTIC_RUN_ID"   # set by torchrun's agent in every worker it starts


class LaunchFailed(RuntimeError):
    """A worker of a multi-process run failed (the others were stopped)."""


def in_worker() -> bool:
    """Whether this process is a worker started by torchrun (or by :func:`launch`)."""
    return WORKER_ENV in os.environ


def worker_rank() -> int:
    """This worker's global rank (0 outside a multi-process run)."""
    return int(os.environ.get("RANK", "0") or 0)


def prepare_worker() -> None:
    """Set up a worker of ``fewstep run --nproc`` before any node runs (no-op in a plain process).

    CUDA: ``cuda`` becomes this worker's GPU (``LOCAL_RANK``), so every model loads there. SIGTERM - what the
    launcher sends the other workers when one failed - raises SystemExit, so a trainer on its way out still
    saves the checkpoint of its last finished step (the default action would end the process on the spot).
    """
    import threading

    import torch

    if not in_worker():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or 0))
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def check_nproc(nproc: int) -> None:
    """ValueError unless ``nproc`` processes can run here (at most one per GPU on a CUDA machine)."""
    import torch

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and nproc > gpus:
        raise ValueError(f"--nproc {nproc} asks for more processes than this machine's {gpus} GPUs "
                         "(one process per GPU)")


def describe_failure(rank: int, failure: object) -> str:
    """"rank 1 (pid 4242) ended with signal SIGKILL" / "... exit code 1: <the worker's error>"."""
    code = int(getattr(failure, "exitcode", 1))
    how = f"exit code {code}"
    if code < 0:
        try:
            how = f"signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"signal {-code}"
    if code in (-signal.SIGTERM, 128 + signal.SIGTERM):     # 143: SIGTERM turned into SystemExit (a worker)
        how += " (stopped by the launcher)"
    message = str(getattr(failure, "message", "") or "").strip()
    generic = not message or message.startswith("Signal ") or "To enable traceback" in message
    return f"rank {rank} (pid {getattr(failure, 'pid', '?')}) ended with {how}" + (
        "" if generic else f": {message.splitlines()[-1]}")


def launch(nproc: int, argv: Sequence[str], *, monitor_interval: float = 0.2) -> None:
    """Run ``python <argv>`` as ``nproc`` workers and wait for all; :class:`LaunchFailed` if any fails.

    ``OMP_NUM_THREADS`` defaults to the CPU count / nproc (as torchrun sets 1), so CPU workers do not
    oversubscribe the cores.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_nproc(nproc)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=monitor_interval)
    try:
        elastic_launch(config, sys.executable)(*argv)
    except ChildFailedError as err:
        first, _ = err.get_first_failure()             # the earliest failure (timestamps in seconds) first
        order = [first, *sorted(r for r in err.failures if r != first)]
        lines = [describe_failure(rank, err.failures[rank]) for rank in order]
        raise LaunchFailed(f"{nproc}-process run failed (when a worker fails, the launcher stops the others): "
                           + "; ".join(lines)) from None


def run_argv(parser: argparse.ArgumentParser, args: argparse.Namespace, drop: Sequence[str]) -> list[str]:
    """The command line that ``parser`` would parse into ``args`` (options in ``drop`` left out).

    Rebuilds each worker's ``fewstep run`` command from the parsed options, so every option (present or
    future) reaches the workers.
    """
    positional: list[str] = []
    options: list[str] = []
    for action in parser._actions:      # argparse keeps no public list of a parser's actions
        value = getattr(args, action.dest, None)
        if action.dest in drop or action.dest == "help" or value is None or value == action.default:
            continue
        if not action.option_strings:
            positional.append(str(value))
        elif isinstance(action, argparse._StoreTrueAction):
            options.append(action.option_strings[0])
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                options += [action.option_strings[0], str(item)]
        else:
            options += [action.option_strings[0], str(value)]
    return options + positional


@contextmanager
def rank_output_dir(default: Path) -> Iterator[Path]:
    """Where this process's graph outputs go: ``default`` on rank 0; a temp folder, removed afterwards, on
    other ranks (every rank runs the whole graph; only rank 0's outputs are kept and printed)."""
    if worker_rank() == 0:
        yield default
        return
    with tempfile.TemporaryDirectory(prefix=f"fewstep-rank{worker_rank()}-") as tmp:
        yield Path(tmp)


def exit_worker(code: int) -> NoReturn:
    """End a worker of a multi-process run now, with ``code``, skipping the interpreter's teardown.

    After the process group is destroyed, torch's C++ teardown at interpreter exit sometimes found a thread
    still joinable and aborted the worker ("terminate called without an active exception", SIGABRT, no Python
    frame left): 1 run in 5-6 of the resume test on a 2-core machine kept busy, so a finished run was reported
    as failed. Everything a run keeps is written and closed by now; the streams and log handlers are flushed
    first.
    """
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def leave_process_group(wait_for_peers: bool = True) -> None:
    """End of a worker's run: destroy the process group the trainers joined (no-op when none).

    ``wait_for_peers``: a barrier first, so no rank tears gloo down while a peer still uses the pair (the peer's
    gloo thread throws and it dies with SIGABRT). A failed run skips it: its peers may sit in a collective, and
    this rank's exit is what makes the launcher stop them.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
