"""``python -m keel`` (and ``torchrun -m keel train ...``): the command line."""

from keel.cli import main

main()
