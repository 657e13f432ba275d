"""Offline packs: one layer of the heatmap for an area and a zoom range, in one file to copy to the phone.

``area`` finds the tiles over a bounding box or a track's corridor, ``formats`` writes MBTiles and
OsmAnd's sqlitedb, ``jobs`` estimates and makes packs politely (``PackService``), and ``progress``
shows a pack's progress on the command line.
"""

from .area import BadPackInput
from .jobs import PackBusy, PackFailed, PackRequest, PackService, PackTooLarge, Progress, make_request
from .progress import ConsoleProgress

__all__ = ['BadPackInput', 'ConsoleProgress', 'PackBusy', 'PackFailed', 'PackRequest', 'PackService',
           'PackTooLarge', 'Progress', 'make_request']
