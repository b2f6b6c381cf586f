"""The ``plaidx`` command line (``main``): index, search, info, eval and serve over index folders."""

from __future__ import annotations

from .errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CliError
from .evaluate import evaluate
from .main import build_parser, main

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "CliError", "build_parser", "evaluate", "main"]
