"""`python -m amlc` is the `amlc` command."""

from .cli import main

main()
