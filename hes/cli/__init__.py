"""The ``hes`` command line: one module per command group, the root app in ``hes.cli.root``."""

from hes.cli.root import app, main

__all__ = ["app", "main"]
