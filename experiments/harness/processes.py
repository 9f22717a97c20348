"""Joining a multi-process (``jax.distributed``) run so that no process ever waits on a
dead peer."""

from __future__ import annotations

import os
import sys


def join_processes(
    coordinator: str, num_processes: int, process_id: int, *, heartbeat: int = 30
) -> None:
    """Makes this process one of ``num_processes`` of a ``jax.distributed`` run, before
    JAX starts its backends. ``coordinator`` is process 0's ``HOST:PORT``, or ``"auto"``
    to let JAX find everything (a TPU pod slice, SLURM, Open MPI, or the
    ``JAX_COORDINATOR_ADDRESS`` variable). CPU devices talk over gloo.

    A joined process must never wait on a dead peer. Two things see to it:

    * ``heartbeat`` (seconds) bounds how long the distributed runtime takes to notice a
      peer that stopped without a word (a lost host) and end the others;
    * an uncaught exception (a collective that failed because a peer died, a bug, a
      Ctrl-C) ends the process at once, after its traceback is printed, with exit code 1
      (130 for Ctrl-C). Left to Python's normal exit, JAX's shutdown barrier would wait
      for the dead peer's heartbeat to time out (JAX's default: 100 s) and then abort.
    """
    import jax

    if heartbeat < 1:
        raise ValueError(f"join_processes: heartbeat must be >= 1 s, got {heartbeat}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only
    if coordinator == "auto":
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)
    else:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, heartbeat_timeout_seconds=heartbeat
        )
    sys.excepthook = _exit_now


def _exit_now(kind, error, tb) -> None:
    """``sys.excepthook`` of a joined process: print, then leave without the atexit
    handlers (JAX's shutdown barrier among them), so no peer is waited on."""
    import traceback

    traceback.print_exception(kind, error, tb)
    print(
        f"jaxsparse: process {process_index()} stops here, without waiting for the other "
        "processes (a collective error usually means a peer died: see its log)",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130 if issubclass(kind, KeyboardInterrupt) else 1)


def process_index() -> int:
    """This process's index in a multi-process run (0 alone)."""
    import jax

    return jax.process_index()


def keep_freed_memory() -> bool:
    """Lets glibc's ``malloc`` serve blocks up to 1 GiB from its heap and keep what is
    freed, instead of mapping each large block fresh from the OS and unmapping it on
    ``free``. Returns whether it applied (Linux with glibc only; elsewhere it does nothing).

    Why: XLA's CPU runtime allocates some temporaries on every step of a compiled
    loop. glibc maps blocks above its threshold (at most 32 MB) fresh each time, and
    every page of a fresh mapping is a page fault when first touched. The random-pruning
    study's widest cell (240 MLPs trained in one vmapped program) took 87 million minor
    faults and 206 s of system CPU in a 15-minute run; with this, 300 steps of that cell
    took 275 thousand faults instead of 8.9 million and 47 s instead of 64 s, with the
    same results (where memory comes from changes no arithmetic). The cost: the process
    keeps its peak heap until it exits.

    ``jaxsparse`` study commands call it at start; ``JAXSPARSE_MALLOC=default`` turns it
    off. The bench does not, so that its figures are what a user's process gets.
    """
    if not sys.platform.startswith("linux") or os.environ.get("JAXSPARSE_MALLOC") == "default":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
