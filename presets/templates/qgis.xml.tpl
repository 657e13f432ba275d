<!DOCTYPE connections>
<qgsXYZTilesConnections version="1.0">
% for layer in ctx.layers:
    <xyztiles name="{{layer.title(ctx.name)}}" url="{{ctx.tile_url(layer, 'xyz')}}" zmin="{{ctx.min_zoom}}" zmax="{{ctx.max_zoom}}" tilePixelRatio="1" authcfg="" username="" password="" referer=""/>
% end
</qgsXYZTilesConnections>
