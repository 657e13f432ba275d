"""Overzoom: a tile deeper than Strava's deepest zoom, cut from its ancestor there and scaled up.

Navigators at zoom 16–18 still show the heat: the tile is the matching part of its zoom-15
ancestor, taken from the largest ancestor size that is needed (so that it is scaled up as
little as possible) and resampled with a filter that keeps the heat lines smooth.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import replace

from PIL import Image

from .layers import UPSTREAM_MAX_ZOOM, Tile, transparent_png

ANCESTOR_SIZES = (256, 512, 1024)  # what Strava serves: ?px=256, the default, and @2x
# Pillow refuses to decode more than twice this: a 1024 px tile is a million pixels, a decompression bomb far more.
Image.MAX_IMAGE_PIXELS = 1024 * 1024


class UnreadableImage(Exception):
    """An ancestor image that cannot be decoded; ``str()`` says why in a few words."""


def ancestor(tile: Tile) -> Tile:
    """The zoom-15 tile that holds ``tile``, at the smallest size that needs no upscaling (at most 1024 px).

    >>> ancestor(Tile('ride', 'hot', 17, 70400, 43000, px=256))
    Tile(activity='ride', color='hot', z=15, x=17600, y=10750, retina=True, px=512, kind='global', athlete='')
    >>> ancestor(Tile('ride', 'hot', 16, 35201, 21501, px=256))
    Tile(activity='ride', color='hot', z=15, x=17600, y=10750, retina=False, px=512, kind='global', athlete='')
    """
    depth = tile.z - UPSTREAM_MAX_ZOOM
    wanted = min(tile.size << depth, ANCESTOR_SIZES[-1])
    size = next(s for s in ANCESTOR_SIZES if s >= wanted)
    return replace(tile, z=UPSTREAM_MAX_ZOOM, x=tile.x >> depth, y=tile.y >> depth, retina=size == 1024,
                   px=min(size, 512))


def crop_box(tile: Tile, ancestor_size: int) -> tuple[int, int, int, int]:
    """The pixels of ``tile`` inside its zoom-15 ancestor of ``ancestor_size`` px: left, top, right, bottom.

    >>> crop_box(Tile('all', 'hot', 17, 70401, 43002, px=256), 1024)
    (256, 512, 512, 768)
    """
    depth = tile.z - UPSTREAM_MAX_ZOOM
    part = ancestor_size >> depth
    left = (tile.x - ((tile.x >> depth) << depth)) * part
    top = (tile.y - ((tile.y >> depth) << depth)) * part
    return left, top, left + part, top + part


def cut(ancestor_png: bytes, tile: Tile) -> bytes:
    """``tile`` as a PNG, from the PNG of its ancestor; a transparent ancestor gives a transparent tile at once."""
    if ancestor_png in (transparent_png(256), transparent_png(512), transparent_png(1024)):
        return transparent_png(tile.size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(ancestor_png)) as image:
                if image.width != image.height or image.width not in ANCESTOR_SIZES:
                    raise UnreadableImage(f'{image.width} × {image.height} px')
                image.load()
                part = image.convert('RGBA').crop(crop_box(tile, image.width))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableImage(type(error).__name__) from None
    scaled = part.resize((tile.size, tile.size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    scaled.save(out, format='PNG', optimize=False, compress_level=6)
    return out.getvalue()
