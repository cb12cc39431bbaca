"""``python -m elt`` is the ``elt`` command."""

from elt.cli import main

main()
