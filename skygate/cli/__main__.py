"""``python -m skygate.cli``: the same command as the ``skygate`` console script."""

from skygate.cli import main

main()
