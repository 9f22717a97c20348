"""Starts N real JAX processes on localhost (``jax.distributed`` over a free port, each
with its own fake CPU devices) and collects what each printed; used by
``tests/test_multihost.py``.

Every launch has a hard deadline: when it passes, or when a worker fails while the
others still run, the whole group is killed and each worker's output is reported, so a
broken collective can never hang CI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it when binding to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Worker:
    process_id: int
    proc: subprocess.Popen
    log: Path
    started: float
    ended: float | None = None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def output(self, tail: int = 6000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text[-tail:]


class WorkersFailed(AssertionError):
    pass


def report(workers: Sequence[Worker], why: str) -> str:
    parts = [why]
    for w in workers:
        parts.append(
            f"--- worker {w.process_id}: returncode {w.returncode}, "
            f"{(w.ended or time.monotonic()) - w.started:.1f} s ---\n{w.output()}"
        )
    return "\n".join(parts)


def start(
    command: Sequence[str],
    args: Sequence[str],
    workdir: Path,
    *,
    num_processes: int = 2,
    local_devices: int = 4,
    env: dict[str, str] | None = None,
) -> list[Worker]:
    """Starts ``num_processes`` copies of ``*command --coordinator 127.0.0.1:PORT
    --num-processes N --process-id I *args`` (``command``: e.g. ``[sys.executable,
    script]``), each seeing ``local_devices`` CPU devices; stdout and stderr of worker I
    go to ``workdir/worker{I}.log``."""
    coordinator = f"127.0.0.1:{free_port()}"
    workdir.mkdir(parents=True, exist_ok=True)
    base_env = {
        **os.environ,
        **(env or {}),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={local_devices}",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    workers = []
    for i in range(num_processes):
        log = workdir / f"worker{i}.log"
        cmd = [*command, "--coordinator", coordinator]
        cmd += ["--num-processes", str(num_processes), "--process-id", str(i), *args]
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=base_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as one
            )
        workers.append(Worker(i, proc, log, time.monotonic()))
    return workers


def kill(workers: Sequence[Worker], sig: int = signal.SIGKILL) -> None:
    """Sends ``sig`` to every worker still running (and its children), then reaps them."""
    for w in workers:
        if w.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, sig)
    for w in workers:
        w.proc.wait()
        w.ended = w.ended or time.monotonic()


def wait(
    workers: Sequence[Worker],
    timeout: float,
    *,
    until: Callable[[], bool] | None = None,
    expect_failure: bool = False,
) -> list[Worker]:
    """Waits for every worker to exit (or for ``until()`` to hold), at most ``timeout`` s.

    Raises :class:`WorkersFailed` with every worker's output, after killing them all,
    when the deadline passes, or (unless ``expect_failure``) when a worker exits non-zero
    or all exit before ``until()`` held.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            for w in workers:
                if w.ended is None and w.proc.poll() is not None:
                    w.ended = time.monotonic()
            if until is not None and until():
                return list(workers)
            failed = [w for w in workers if w.ended is not None and w.returncode != 0]
            if failed and not expect_failure:
                raise WorkersFailed(report(workers, f"worker {failed[0].process_id} failed"))
            if all(w.ended is not None for w in workers):
                if until is not None:
                    raise WorkersFailed(report(workers, "workers exited before the condition"))
                return list(workers)
            if time.monotonic() > deadline:
                raise WorkersFailed(report(workers, f"timed out after {timeout:.0f} s"))
            time.sleep(0.05)
    except BaseException:
        kill(workers)
        raise


def run(
    command: Sequence[str], args: Sequence[str], workdir: Path, timeout: float, **kw
) -> list[Worker]:
    """:func:`start` then :func:`wait`: all workers must exit 0 within ``timeout``."""
    return wait(start(command, args, workdir, **kw), timeout)
