"""The ``hpo`` command: a thin layer of click commands over the library."""

from hpo.cli._main import entry, main

__all__ = ["entry", "main"]
