"""Offline packs: one layer of the heatmap for an area and a zoom range, in one file to copy to the phone.

``area`` reads the area (a bounding box, a GPX or GeoJSON track) and finds the tiles over it,
``request`` checks what a pack is made of and estimates it, ``runner`` gets the tiles politely and
writes them, ``formats`` writes MBTiles and OsmAnd's sqlitedb, ``jobs`` keeps the packs the page
makes (``PackService``: estimate, start, cancel, delete, the disk they take), and ``progress`` shows
a pack's progress on the command line.

This module itself stays light: ``area`` and ``jobs`` load numpy and shapely, which take a good
part of a second to import, so the server and the command line import them only when packs are used.
What they need before that (the errors a route answers, the upload limit, whether a job waits to be
resumed) is here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

MAX_TRACK_BYTES = 20 * 2 ** 20  # the largest track file a pack is made from
JOB_ID = re.compile(r'\d{8}-\d{6}-[0-9a-f]{6}')


class BadPackInput(ValueError):
    """Input that cannot make a pack; the message is one line naming what is wrong and what to do."""


class PackBusy(Exception):
    """Another pack is being made: one runs at a time."""


class CountingBusy(Exception):
    """Another estimate is counting tiles now: retry in a moment."""


class PackFailed(Exception):
    """The pack stopped; the message says why and what to do."""


def packs_folder(data_dir: Path) -> Path:
    """Where the jobs' JSON, the packs the page made and the one-pack-at-a-time lock live.

    >>> packs_folder(Path('/var/lib/strava-heatmap'))
    PosixPath('/var/lib/strava-heatmap/packs')
    """
    return Path(data_dir) / 'packs'


def job_files(data_dir: Path) -> list[Path]:
    """The JSON file of every job, newest first (job ids start with the time they were made)."""
    found = [path for path in packs_folder(data_dir).glob('*.json') if JOB_ID.fullmatch(path.stem)]
    return sorted(found, key=lambda path: path.stem, reverse=True)


def job_states(data_dir: Path) -> Counter:
    """How many jobs are in each state (``running``, ``done``, ``failed``, ``cancelled``), read from their files; a
    file that cannot be read is a failed job, as the page shows it."""
    states = Counter()
    for path in job_files(data_dir):
        try:
            states[str(json.loads(path.read_text(encoding='utf-8')).get('status'))] += 1
        except (OSError, ValueError, AttributeError):
            states['failed'] += 1
    return states


def has_unfinished_job(data_dir: Path) -> bool:
    """Whether a job was still running when the server stopped, so that it must go on now."""
    return job_states(data_dir)['running'] > 0
