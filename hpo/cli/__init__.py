"""The ``hpo`` command: a thin layer of click commands over the library.

``_app`` holds the group and what every command shares; ``_run`` and ``_inspect`` register
their commands on it when imported here; ``_console`` formats what they print.
"""

from hpo.cli import (  # noqa: F401  (importing them registers their commands)
    _inspect,
    _k8s,
    _logs,
    _run,
    _slurm,
)
from hpo.cli._app import entry, main

__all__ = ["entry", "main"]
