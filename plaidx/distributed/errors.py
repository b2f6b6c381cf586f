"""The errors of sharded indexes: a damaged sharded folder, a shard that did not answer, a failed build."""

from __future__ import annotations

from ..errors import IndexFormatError, PlaidxError


class ShardFormatError(IndexFormatError):
    """A sharded index on disk is missing a shard, names another codec, or has a malformed manifest."""


class ShardUnavailableError(PlaidxError, RuntimeError):
    """A shard did not answer (its worker died and retries ran out); no partial result is returned."""


class ShardBuildError(PlaidxError, RuntimeError):
    """Some shards of a build failed; the finished ones are kept, and calling build again resumes it."""


__all__ = ["ShardBuildError", "ShardFormatError", "ShardUnavailableError"]
