"""Exit codes of the command line and the error that carries one."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and failed: a damaged index, problems found by --verify, a failed search
EXIT_USAGE = 2  # the command line or an input is wrong: a missing file, bad JSONL, an unknown option
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error to report on stderr as ``plaidx <command>: error: ...`` with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code
