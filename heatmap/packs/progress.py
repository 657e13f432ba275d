"""Showing a pack's progress on the command line: a tqdm bar with an ETA on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

from .request import duration
from .runner import Progress

BAR = 'pack {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tiles [{elapsed}, {postfix}]'


def progress_line(progress: Progress) -> str:
    """One plain line of progress, for logs and pipes.

    >>> progress_line(Progress(done=120, total=2400, fetched=100, seconds_left=570))
    'pack: 120/2,400 tiles (5%), 100 requests to Strava, about 10 min left'
    """
    return (f'pack: {progress.done:,}/{progress.total:,} tiles ({progress.percent}%), {progress.fetched:,} requests '
            f'to Strava, about {duration(progress.seconds_left)} left')


class ConsoleProgress:
    """A progress callback for ``PackService.run``: use it as a context manager around the run."""

    def __init__(self, stream: TextIO | None = None, every: float = 10):
        self.stream = stream or sys.stderr
        self.every = every  # seconds between plain lines
        self._bar: tqdm | None = None
        self._last_line = float('-inf')
        self._terminal = self.stream.isatty()

    def __enter__(self) -> ConsoleProgress:
        return self

    def __exit__(self, *_) -> None:
        if self._bar is not None:
            self._bar.close()

    def __call__(self, progress: Progress) -> None:
        if self._terminal:
            self._draw(progress)
        elif progress.note or progress.done == progress.total or time.monotonic() - self._last_line >= self.every:
            print(progress.note and f'pack: {progress.note}' or progress_line(progress), file=self.stream, flush=True)
            self._last_line = time.monotonic()

    def _draw(self, progress: Progress) -> None:
        # tqdm's own ETA would learn from the free cached tiles; the pack's counts only requests to Strava at the rate.
        postfix = f'{progress.fetched:,} requests to Strava, about {duration(progress.seconds_left)} left'
        if self._bar is None:
            self._bar = tqdm(total=progress.total, file=self.stream, dynamic_ncols=True, bar_format=BAR,
                             postfix=postfix)
        if progress.note:
            self._bar.write(f'pack: {progress.note}', file=self.stream)
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.update(progress.done - self._bar.n)
