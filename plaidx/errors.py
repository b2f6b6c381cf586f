"""Every exception and warning plaidx raises, each naming the problem and what to do about it."""

from __future__ import annotations


class PlaidxError(Exception):
    """Base class of every plaidx error."""


class IndexFormatError(PlaidxError, ValueError):
    """An index on disk is missing, truncated, corrupted or of an unsupported format version."""


class UnsafeFileError(IndexFormatError):
    """A foreign file (a pickle, a .pt, an object .npy) asks to run code or build objects plaidx does not allow."""


class IndexLockedError(PlaidxError, RuntimeError):
    """Another writer holds the index's lock."""


class StaleIndexError(PlaidxError, RuntimeError):
    """The index changed on disk since this handle opened it; reopen before writing."""


class CheckpointError(PlaidxError, ValueError):
    """A checkpoint folder is missing, incomplete, malformed or of a layout plaidx cannot load."""


class MissingExtraError(PlaidxError, ImportError):
    """A part of plaidx needs packages of an extra that is not installed (the message names the extra)."""


class DriftWarning(UserWarning):
    """Documents added since the build sit farther from the centroids than the build's own; a recluster
    (or a rebuild) would restore recall."""


def require(module: str, extra: str, what: str) -> object:
    """Import ``module`` or raise :class:`MissingExtraError` saying which extra of plaidx provides it."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{what} needs the package {module.split('.')[0]!r} ({exc}); install it with "
                                f"`pip install 'plaidx[{extra}]'`") from exc


def check_unicode(text: str, what: str) -> None:
    """A ValueError for a string UTF-8 cannot hold (a lone surrogate, as a bad decode with errors='surrogateescape'
    leaves), which the tokenizer and SQLite would reject with errors of their own."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid Unicode text (a lone surrogate {text[exc.start]!r} at position "
                         f"{exc.start}): decode the source with errors='replace', or drop the character") from None


__all__ = ["CheckpointError", "DriftWarning", "IndexFormatError", "IndexLockedError", "MissingExtraError",
           "PlaidxError", "StaleIndexError", "UnsafeFileError", "check_unicode", "require"]
