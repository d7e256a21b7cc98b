"""``python -m inputkit`` is the ``inputkit`` command."""

from inputkit.cli import main

main()
