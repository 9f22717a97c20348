"""What every study shares: flags from a dataclass, presets, a hashed run directory,
stage-by-stage resume, seeds, a progress bar, writers, and the study template.

A study is three things:

* a frozen dataclass deriving from :class:`StudyConfig`, whose fields are its flags
  (``rewind_step`` -> ``--rewind-step``; help, choices and bounds in each field's
  ``metadata``), a ``NAME`` (the subcommand and the run directory's prefix) and a
  ``QUICK`` preset;
* ``run_study(cfg, *, log=print) -> dict``, which calls :func:`start` for its
  :class:`Run`, computes through :meth:`Run.stage` and ends with :meth:`Run.publish`;
* its report: functions of the run's results (tables, CSV rows, figures) that the run
  passes to :meth:`Run.publish`; a report never imports its run.

``STUDY = Study(Config, run_study, __doc__)`` in the study's ``__init__`` is the whole
wrapper (parser, ``--quick``, ``jaxsparse <name>``, ``python -m``), and
registering it with the ``jaxsparse`` command is one line in ``experiments.cli``.

The modules, each one idea: :mod:`~experiments.harness.flags` (the config dataclass and
its flags), :mod:`~experiments.harness.study` (the template, a run and its seeds),
:mod:`~experiments.harness.processes` (multi-process runs), :mod:`~experiments.harness.tables`
(what reports print) and :mod:`~experiments.harness.clock` (compiling and timing). Studies
use the names below as ``harness.start``, ``harness.pm``...
"""

from experiments.harness.clock import (
    COMPILE_MODES,
    compiled,
    compiler_options,
    enable_compilation_cache,
    timed,
)
from experiments.harness.flags import (
    StudyConfig,
    add_dataclass_arguments,
    build_parser,
    compile_field,
    config_from_args,
)
from experiments.harness.processes import join_processes
from experiments.harness.study import Calls, Run, Study, fold, seed_keys, start
from experiments.harness.tables import finite, markdown_table, mean_std, pm, pyplot

__all__ = [
    "COMPILE_MODES",
    "Calls",
    "Run",
    "Study",
    "StudyConfig",
    "add_dataclass_arguments",
    "build_parser",
    "compile_field",
    "compiled",
    "compiler_options",
    "config_from_args",
    "enable_compilation_cache",
    "finite",
    "fold",
    "join_processes",
    "markdown_table",
    "mean_std",
    "pm",
    "pyplot",
    "seed_keys",
    "start",
    "timed",
]
