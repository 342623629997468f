"""Errors raised by kbindex. Only cli.py turns them into messages and exit codes."""


class KbindexError(Exception):
    """A foreseeable failure; its message is shown to the user as one line."""

    exit_code = 1


class UsageError(KbindexError):
    """The command was called wrongly (bad option value, empty query)."""

    exit_code = 2


class SourceError(KbindexError):
    """One source (file or URL) could not be read; the run goes on without it."""

    def __init__(self, source: str, reason: str, kind: str = "error"):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind  # short machine-readable reason, e.g. "http_404", "timeout"

    def __reduce__(self):
        # Rebuilt from its fields (args holds only the message): it crosses from the extraction
        # worker processes as a pickle.
        return self.__class__, (self.source, self.reason, self.kind), self.__dict__


class FetchError(SourceError):
    """An HTTP fetch failed (network, status, limits)."""

    def __init__(
        self,
        source: str,
        reason: str,
        kind: str = "fetch",
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(source, reason, kind)
        self.status = status
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503)

    @property
    def transient(self) -> bool:
        """True for failures that may pass on their own (timeouts, 5xx, 429)."""
        return self.kind in {"timeout", "connection"} or (
            self.status is not None and (self.status >= 500 or self.status == 429)
        )


class SkipSource(SourceError):
    """A source that is deliberately not indexed (empty, binary, not HTML)."""


class ModelMismatchError(KbindexError):
    """The collection was built with a different embedding model."""


class CollectionError(KbindexError):
    """The collection is missing, empty, or its name is invalid."""


class StoreError(KbindexError):
    """The vector store could not be opened, read or written."""


class LockedError(KbindexError):
    """Another process holds the write lock on the store."""


class ModelError(KbindexError):
    """The embedding model could not be loaded."""


class ConfigError(KbindexError):
    """The project config file is invalid; the message names the file, line and key."""

    exit_code = 2


class WriteInProgressError(KbindexError):
    """A write holds the store, so a check would see it half done (retry later, or --wait)."""

    # EX_TEMPFAIL of sysexits.h (BSD): a temporary failure; the user is invited to retry.
    exit_code = 75
