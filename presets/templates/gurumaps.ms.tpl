<?xml version="1.0" encoding="UTF-8"?>
<customMapSource overlay="true" overzoom="true">
  <name>{{layer.title(ctx.name)}}</name>
  <minZoom>{{ctx.min_zoom}}</minZoom>
  <maxZoom>{{ctx.max_zoom}}</maxZoom>
  <url>{{ctx.tile_url(layer, 'dollar')}}</url>
</customMapSource>
