"""Progress of an index run: a live status line on a terminal, periodic log lines otherwise.

Driven only by events: the Indexer's on_event(records.SourceEvent) and the crawler's
on_progress(CrawlResult). It knows nothing of the pipeline beyond those.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from kbindex.records import Failed, Indexed, SourceEvent

LOG_INTERVAL = 10.0  # seconds between plain log lines when stderr is not a terminal


class Progress:
    """Counts pages fetched, queue size, chunks embedded and errors, and shows them."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 interval: float = LOG_INTERVAL, clock=time.monotonic, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet  # no status at all, live or periodic; messages still go out
        self.live = False if quiet else self.stream.isatty() if live is None else live
        self.interval = interval
        self.clock = clock
        self.fetched = 0
        self.queued = 0
        self.indexed = 0
        self.chunks = 0
        self.errors = 0
        self._crawl_fetched: dict[int, int] = {}
        self._start = clock()
        self._last_log = self._start
        self._live = None
        self._console = None

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=self.stream)
            self._live = Live(self.render(), console=self._console, refresh_per_second=4,
                              transient=True)
            self._live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self) -> str:
        return (f"fetched {self.fetched}  queue {self.queued}  indexed {self.indexed}  "
                f"chunks {self.chunks}  errors {self.errors}  {self.clock() - self._start:.0f}s")

    def render(self):
        from rich.text import Text

        return Text("kbindex: " + self.line())

    # ---------------------------------------------------------------- events

    def event(self, event: SourceEvent) -> None:
        """The Indexer's on_event: records.Indexed, Failed count here; the others only update."""
        if isinstance(event, Indexed):
            self.indexed += 1
            self.chunks += event.chunks
        elif isinstance(event, Failed):
            self.errors += 1
        self._update()

    def crawl(self, result) -> None:
        """The crawler's on_progress, called with its live CrawlResult after each page."""
        self._crawl_fetched[id(result)] = result.fetched
        self.fetched = sum(self._crawl_fetched.values())
        self.queued = result.queued
        self._update()

    def message(self, text: str) -> None:
        """A line for the user (a skip, a failure) that must not garble the live display."""
        if self._console is not None:
            self._console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=self.stream, flush=True)

    def _update(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            return
        now = self.clock()
        if not self.quiet and now - self._last_log >= self.interval:
            self._last_log = now
            print("kbindex: " + self.line(), file=self.stream, flush=True)
