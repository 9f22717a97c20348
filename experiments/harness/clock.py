"""Compiling and timing: JAX's persistent compilation cache, the wall time of a call until
its result is ready, and compiling ahead of time so compile is reported apart."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def enable_compilation_cache(directory: str | None = None) -> Path:
    """Turns on JAX's persistent compilation cache, so a second run of a study skips
    compiling. Default directory: ``$JAXSPARSE_CACHE`` or ``~/.cache/jaxsparse/xla``."""
    import jax

    path = Path(
        directory
        or os.environ.get("JAXSPARSE_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxsparse" / "xla"
    )
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # cache every program that took a noticeable time to compile, however small
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# XLA's CPU backend at optimisation level 0: LLVM's optimisation of the generated code is
# most of a small program's compile (a study's training step), and level 0 skips it; the
# code runs slower, which a short run (--quick) does not notice.
COMPILE_MODES = {"optimized": None, "fast": {"xla_backend_optimization_level": 0}}


def compiler_options(mode: str) -> dict[str, Any] | None:
    """The ``compiler_options`` of ``jax.jit`` for a study's main programs, by the mode of
    its ``--compile`` flag (:data:`COMPILE_MODES`): ``"optimized"``, XLA's defaults
    (``None``); ``"fast"``, the backend's optimisation level 0. Level 0 keeps XLA's graph
    passes (fusion, layout) and skips LLVM's optimisation of the generated code. Measured
    on the elastic study's ResNet-14 program (2 CPU cores): its ``--quick`` size compiles
    in 4.7 CPU-s instead of 8.5; at its default size in 7.4 instead of 14.3, and 50 steps
    then take 2.45 s instead of 1.17. Results may differ in the last bits (another order
    of floating-point operations), so the flag is part of a run's hash.

    Example::

        prog = jax.jit(program, compiler_options=harness.compiler_options(cfg.compile))
    """
    if mode not in COMPILE_MODES:
        raise ValueError(
            f"compiler_options: mode must be one of {list(COMPILE_MODES)}, got {mode!r}"
        )
    options = COMPILE_MODES[mode]
    return dict(options) if options else None


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``: the wall time until every array of the result
    is ready. JAX dispatches asynchronously, so a clock read right after the call would
    time only the dispatch."""
    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t0


def compiled(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """Compiles the jitted ``fn`` ahead of time for the shapes of ``args``:
    ``(executable, seconds)``, so compile time is reported apart from measured compute.
    The executable takes arguments of the same shapes and dtypes (never recompiles)."""
    t0 = time.perf_counter()
    exe = fn.lower(*args).compile()
    return exe, time.perf_counter() - t0
