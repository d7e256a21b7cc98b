"""``python -m inputkit`` is the ``inputkit`` command."""

from inputkit.cli import main

if __name__ == "__main__":  # worker processes re-import the main module: do not run again
    main()
