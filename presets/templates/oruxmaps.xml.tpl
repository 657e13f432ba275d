<?xml version="1.0" encoding="UTF-8"?>
<onlinemapsources>
% for index, layer in enumerate(ctx.layers):
  <onlinemapsource uid="{{FIRST_ID + index}}">
    <name>{{layer.title(ctx.name)}}</name>
    <url>{{ctx.tile_url(layer, 'dollar')}}</url>
    <minzoom>{{ctx.min_zoom}}</minzoom>
    <maxzoom>{{ctx.max_zoom}}</maxzoom>
    <projection>MERCATORESFERICA</projection>
    <servers></servers>
    <httpparam name=""></httpparam>
    <cacheable>1</cacheable>
    <downloadable>1</downloadable>
    <maxtilesday>0</maxtilesday>
    <maxthreads>0</maxthreads>
    <xop></xop>
    <yop></yop>
    <zop></zop>
    <qop></qop>
    <sop></sop>
  </onlinemapsource>
% end
</onlinemapsources>
