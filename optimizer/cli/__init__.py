"""The `prompt-worker` command: one module per command group, `main` the entry point."""

from optimizer.cli.command import main

__all__ = ["main"]
