"""``python -m hes.cli``: how spawned child processes run a ``hes`` command."""

from hes.cli.root import main

main()
