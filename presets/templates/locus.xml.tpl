<?xml version="1.0" encoding="UTF-8"?>
<providers>
% for index, layer in enumerate(ctx.layers):
  <provider id="{{FIRST_ID + index}}" type="0" visible="true" background="-1">
    <name>{{ctx.name}}</name>
    <mode>{{layer.title(ctx.name)}}</mode>
    <countries>World</countries>
    <url>{{ctx.tile_url(layer, 'xyz')}}</url>
    <zoomPart>{z}-{{LOCUS_ZOOM_OFFSET}}</zoomPart>
    <zoomMin>{{ctx.min_zoom + LOCUS_ZOOM_OFFSET}}</zoomMin>
    <zoomMax>{{ctx.max_zoom + LOCUS_ZOOM_OFFSET}}</zoomMax>
    <tileSize>{{TILE_SIZE}}</tileSize>
    <attribution>Heatmap © Strava</attribution>
  </provider>
% end
</providers>
