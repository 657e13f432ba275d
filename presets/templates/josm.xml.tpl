<?xml version="1.0" encoding="UTF-8"?>
<imagery xmlns="http://josm.openstreetmap.de/maps-1.0">
% for layer in ctx.layers:
  <entry overlay="true">
    <name>{{layer.title(ctx.name)}}</name>
    <id>strava-heatmap-{{layer.slug}}</id>
    <type>tms</type>
    <category>other</category>
    <url>{{ctx.tile_url(layer, 'josm')}}</url>
    <min-zoom>{{ctx.min_zoom}}</min-zoom>
    <max-zoom>{{ctx.max_zoom}}</max-zoom>
    <tile-size>{{TILE_SIZE}}</tile-size>
    <attribution-text mandatory="false">Heatmap © Strava</attribution-text>
    <attribution-url>https://www.strava.com/maps/global-heatmap</attribution-url>
  </entry>
% end
</imagery>
