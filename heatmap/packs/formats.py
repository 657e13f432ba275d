"""The pack files: MBTiles 1.3 and OsmAnd's ``.sqlitedb``, both SQLite, built under a temporary name.

A pack is written to ``.<name>.part`` beside the output and renamed into place only when it is
complete, so a half-built pack is never where the user looks. The part file remembers which
request it belongs to: running the same pack again after a crash or Ctrl-C keeps its tiles.

- MBTiles (GDAL/QGIS, Guru Maps, Locus, OruxMaps): rows in TMS order (``tile_row = 2^z - 1 - y``),
  the metadata the 1.3 spec names, ``type=overlay``. Tiles without heat are left out: the spec
  allows it, and an app draws nothing there.
- OsmAnd ``.sqlitedb``: ``tilenumbering='simple'`` (otherwise OsmAnd reads the zoom as 17 - z), y
  not inverted, an empty ``url``: an offline overlay that never asks a server (and so carries no
  address or key), with no ``expireminutes``, so that its tiles never expire. Tiles without heat
  are stored as the transparent tile the server sends for them, so OsmAnd draws exactly what it
  draws online instead of stretching a lower zoom's tile over the gap.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..layers import transparent_png
from . import BadPackInput

MBTILES_APPLICATION_ID = 0x4D504258  # 'MPBX', as MBTiles 1.3 suggests
ATTRIBUTION = 'Heatmap © Strava'
COMMIT_EVERY = 200  # tiles: a crash loses at most this many tiles' worth of the part file
OSMAND_TABLES = (
    'CREATE TABLE tiles (x int, y int, z int, s int, image blob, time long, PRIMARY KEY (x,y,z,s))',
    'CREATE INDEX IND on tiles (x,y,z,s)',
    'CREATE TABLE info (tilenumbering TEXT, minzoom TEXT, maxzoom TEXT, url TEXT, title TEXT, ellipsoid TEXT, '
    'inverted_y TEXT, timecolumn TEXT, expireminutes TEXT, tilesize TEXT, randoms TEXT, referer TEXT, '
    'useragent TEXT, rule TEXT)',
)


def osmand_info(title: str, min_zoom: int, max_zoom: int, tile_size: int, url: str = '',
                expire_minutes: str = '') -> tuple:
    """The ``info`` row OsmAnd reads, in the column order of ``OSMAND_TABLES``.

    >>> osmand_info('Strava ride', 10, 15, 256)[:5]
    ('simple', '10', '15', '', 'Strava ride')
    """
    return ('simple', str(min_zoom), str(max_zoom), url, title, '0', '0', 'yes', expire_minutes, str(tile_size),
            '', '', '', '')


def create_osmand_tables(db: sqlite3.Connection, info: tuple) -> None:
    """OsmAnd's schema with its one ``info`` row: for offline packs and for the online presets alike."""
    for statement in OSMAND_TABLES:
        db.execute(statement)
    set_osmand_info(db, info)


def set_osmand_info(db: sqlite3.Connection, info: tuple) -> None:
    db.execute('DELETE FROM info')
    db.execute(f'INSERT INTO info VALUES ({", ".join("?" * len(info))})', info)


@dataclass(frozen=True)
class PackInfo:
    """What a pack says about itself: its name and description, the area's bounds, zooms and tile size."""

    name: str
    description: str
    bounds: tuple[float, float, float, float]  # west, south, east, north
    min_zoom: int
    max_zoom: int
    tile_size: int


def mbtiles_metadata(info: PackInfo) -> dict[str, str]:
    """The metadata rows of MBTiles 1.3.

    >>> meta = mbtiles_metadata(PackInfo('Strava ride/hot', 'z10-15', (7.0, 46.0, 7.5, 46.25), 10, 15, 256))
    >>> meta['bounds'], meta['center'], meta['type'], meta['format']
    ('7,46,7.5,46.25', '7.25,46.125,15', 'overlay', 'png')
    """
    west, south, east, north = info.bounds
    return {
        'name': info.name, 'description': info.description, 'format': 'png', 'type': 'overlay', 'version': '1',
        'bounds': ','.join(f'{value:.7g}' for value in info.bounds),
        'center': f'{(west + east) / 2:.7g},{(south + north) / 2:.7g},{info.max_zoom}',
        'minzoom': str(info.min_zoom), 'maxzoom': str(info.max_zoom), 'attribution': ATTRIBUTION,
    }


def part_path(out: Path) -> Path:
    """Where a pack is built before it is complete.

    >>> part_path(Path('/maps/alps.mbtiles'))
    PosixPath('/maps/.alps.mbtiles.part')
    """
    return out.with_name(f'.{out.name}.part')


class PackWriter:
    """A pack file being built; ``fingerprint`` names the request, so that a part file of another is not reused."""

    extension = ''

    def __init__(self, out: Path, fingerprint: str, tile_size: int):
        self.out, self.part, self.tile_size = Path(out), part_path(Path(out)), tile_size
        self.db = self._open(fingerprint)
        self._uncommitted = 0

    def _open(self, fingerprint: str) -> sqlite3.Connection:
        if self.part.exists():
            db = sqlite3.connect(self.part)
            try:
                if db.execute('SELECT fingerprint FROM pack_build').fetchone() == (fingerprint,):
                    return db
            except sqlite3.DatabaseError:  # not one of ours, or not finished being created
                pass
            db.close()
            self.part.unlink()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.part)
        self.create(db)
        db.execute('CREATE TABLE pack_build (fingerprint TEXT)')
        db.execute('INSERT INTO pack_build VALUES (?)', (fingerprint,))
        db.commit()
        return db

    def create(self, db: sqlite3.Connection) -> None:
        raise NotImplementedError

    def stored(self) -> set[tuple[int, int, int]]:
        """The (z, x, y) of the tiles the part file holds already."""
        raise NotImplementedError

    def add(self, z: int, x: int, y: int, image: bytes) -> None:
        self.insert(z, x, y, image)
        self._uncommitted += 1
        if self._uncommitted >= COMMIT_EVERY:
            self.db.commit()
            self._uncommitted = 0

    def insert(self, z: int, x: int, y: int, image: bytes) -> None:
        raise NotImplementedError

    def describe(self, info: PackInfo) -> None:
        raise NotImplementedError

    def finish(self, info: PackInfo) -> Path:
        """Write the metadata and move the complete pack to ``out``."""
        self.describe(info)
        self.db.execute('DROP TABLE pack_build')
        self.db.commit()
        self.db.close()
        os.replace(self.part, self.out)
        return self.out

    def close(self) -> None:
        """Keep what was built so far (for the next run) and let go of the file."""
        try:
            self.db.commit()
            self.db.close()
        except sqlite3.ProgrammingError:  # finished: already closed
            pass


class MBTilesWriter(PackWriter):
    extension = '.mbtiles'

    def create(self, db: sqlite3.Connection) -> None:
        db.execute(f'PRAGMA application_id = {MBTILES_APPLICATION_ID}')
        db.execute('CREATE TABLE metadata (name text, value text)')
        db.execute('CREATE TABLE tiles (zoom_level integer, tile_column integer, tile_row integer, tile_data blob)')
        db.execute('CREATE UNIQUE INDEX tile_index on tiles (zoom_level, tile_column, tile_row)')

    def stored(self) -> set[tuple[int, int, int]]:
        rows = self.db.execute('SELECT zoom_level, tile_column, tile_row FROM tiles')
        return {(z, x, 2 ** z - 1 - row) for z, x, row in rows}

    def insert(self, z: int, x: int, y: int, image: bytes) -> None:
        if image != transparent_png(self.tile_size):
            self.db.execute('INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, ?)', (z, x, 2 ** z - 1 - y, image))

    def describe(self, info: PackInfo) -> None:
        self.db.execute('DELETE FROM metadata')
        self.db.executemany('INSERT INTO metadata VALUES (?, ?)', mbtiles_metadata(info).items())


class OsmAndWriter(PackWriter):
    extension = '.sqlitedb'

    def create(self, db: sqlite3.Connection) -> None:
        create_osmand_tables(db, osmand_info('', 0, 0, self.tile_size))

    def stored(self) -> set[tuple[int, int, int]]:
        return {(z, x, y) for x, y, z in self.db.execute('SELECT x, y, z FROM tiles')}

    def insert(self, z: int, x: int, y: int, image: bytes) -> None:
        self.db.execute('INSERT OR REPLACE INTO tiles VALUES (?, ?, ?, 0, ?, ?)',
                        (x, y, z, image, int(time.time() * 1000)))

    def describe(self, info: PackInfo) -> None:
        set_osmand_info(self.db, osmand_info(info.name, info.min_zoom, info.max_zoom, info.tile_size))


WRITERS = {'mbtiles': MBTilesWriter, 'osmand': OsmAndWriter}


def output_format(out: Path, given: str | None) -> str:
    """The format of a pack written to ``out``: ``given`` (``--format``) when the name agrees, else the one the
    name's extension stands for; a folder gets ``given`` or MBTiles.

    >>> output_format(Path('alps.sqlitedb'), None), output_format(Path('alps.MBTiles'), 'mbtiles')
    ('osmand', 'mbtiles')
    >>> output_format(Path('alps.mbtiles'), 'osmand')
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: alps.mbtiles is named for mbtiles, not osmand: name it alps.sqlitedb, or leave \
--format out
    >>> output_format(Path('alps.db'), None)
    Traceback (most recent call last):
    heatmap.packs.BadPackInput: alps.db: name the file .mbtiles or .sqlitedb, or give --format mbtiles or osmand
    """
    if given is not None and given not in WRITERS:
        raise BadPackInput(f'--format must be {" or ".join(WRITERS)}, not {given[:40]!r}')
    if out.is_dir():
        return given or 'mbtiles'
    named = next((format for format, writer in WRITERS.items() if out.suffix.lower() == writer.extension), None)
    if named is None and given is None:
        raise BadPackInput(f'{out}: name the file {" or ".join(w.extension for w in WRITERS.values())}, or give '
                           f'--format {" or ".join(WRITERS)}')
    if named is not None and given not in (None, named):
        raise BadPackInput(f'{out} is named for {named}, not {given}: name it '
                           f'{out.with_suffix(WRITERS[given].extension)}, or leave --format out')
    return given or named
