"""Lets `python -m digest` work like the `digest` command."""

from digest.cli import main

main()
