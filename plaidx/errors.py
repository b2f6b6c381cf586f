"""Exception types raised by plaidx, each naming the problem and what to do about it."""


class PlaidxError(Exception):
    """Base class of every plaidx error."""


class IndexFormatError(PlaidxError, ValueError):
    """An index on disk is missing, truncated, corrupted or of an unsupported format version."""


class IndexLockedError(PlaidxError, RuntimeError):
    """Another writer holds the index's lock."""


class StaleIndexError(PlaidxError, RuntimeError):
    """The index changed on disk since this handle opened it; reopen before writing."""
