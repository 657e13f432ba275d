<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Presets: {{ctx.name}}</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; color: #222 }
  code { background: #f3f3f3; padding: 0 .2em; word-break: break-all } .warn { color: #a4161a; font-weight: 600 }
  figure { display: inline-block; margin: .5em 1em .5em 0; text-align: center } figcaption { font-size: .8em }
  section { border-top: 1px solid #ddd; margin-top: 1.5em }
</style>
</head>
<body>
<h1>Presets for {{ctx.name}}</h1>
<p>Made for <code>{{ctx.base}}</code>{{' with your access key' if ctx.key else ''}}.
   Each preset loads the tiles from this server; open this page on the phone, or scan a code.</p>
<p id="packs">No signal where you ride? Make an <a href="{{ctx.base}}/packs/{{ctx.key_query()}}">offline pack</a>:
   one layer for an area or along a track, in one file to copy to the phone.</p>
% if ctx.plain_http:
<p class="warn" id="http-warning">These presets use http:// on a public address. OsmAnd's downloader does not follow
  a redirect from http:// to https://: if your server answers on https://, set HEATMAP_PUBLIC_URL to the https:// address.</p>
% end
% by_app = {}
% for file in files:
%   by_app.setdefault(file.app, []).append(file)
% end

<section id="osmand">
<h2>OsmAnd</h2>
<p>Tap a link on the phone (or scan its code): OsmAnd opens "Add online source" filled in; press Save.
   Then Configure map → Map source or Overlay map → choose it.</p>
% for layer in ctx.layers:
%   link = ctx.osmand_link(layer)
<figure>{{!qr_svg(link)}}<figcaption><a href="{{link}}">{{layer.title(ctx.name)}}</a></figcaption></figure>
% end
<p>Or copy a file to <code>Android/media/net.osmand.plus/files/tiles/</code>: a <code>.sqlitedb</code> as it is,
   or a <code>.metainfo</code> as <code>tiles/&lt;name&gt;/.metainfo</code>:</p>
<ul>
% for file in by_app['osmand']:
  <li><a href="{{ctx.file_url(file.name)}}">{{file.name}}</a></li>
% end
</ul>
</section>

<section id="locus">
<h2>Locus Map</h2>
<p>Tap the link on the phone (or scan it): Locus installs the maps into <code>mapsOnline/custom/</code>.
   They appear under Maps → Online → "{{ctx.name}}"; use them as an overlay from the map's menu.</p>
% link = ctx.locus_link()
<figure>{{!qr_svg(link)}}<figcaption><a href="{{link}}">Install in Locus</a></figcaption></figure>
<p>Or copy <a href="{{ctx.file_url('locus-strava-heatmap.xml')}}">locus-strava-heatmap.xml</a>
   to <code>Locus/mapsOnline/custom/</code>.</p>
</section>

<section id="gurumaps">
<h2>Guru Maps</h2>
<p>Open a <code>.ms</code> file on the phone and choose "Open in Guru Maps"; each is an overlay.</p>
% for file in by_app['gurumaps']:
%   link = ctx.file_url(file.name)
<figure>{{!qr_svg(link)}}<figcaption><a href="{{link}}">{{file.name}}</a></figcaption></figure>
% end
</section>

<section id="oruxmaps">
<h2>OruxMaps</h2>
<p>Save <a href="{{ctx.file_url('oruxmaps-onlinemapsources.xml')}}">oruxmaps-onlinemapsources.xml</a> as
   <code>oruxmaps/mapfiles/customonlinemaps/onlinemapsources.xml</code>, then refresh the list of online maps.</p>
</section>

<section id="josm">
<h2>JOSM</h2>
<p>Preferences → Imagery → add a TMS entry with one of these URLs, or add
   <a href="{{ctx.file_url('josm-imagery.xml')}}">josm-imagery.xml</a> under "imagery sources".</p>
<ul>
% for layer in ctx.layers:
  <li><code>{{ctx.josm_url(layer)}}</code></li>
% end
</ul>
</section>

<section id="qgis">
<h2>QGIS, gpx.studio, Leaflet</h2>
<p>QGIS: Browser → XYZ Tiles → Load Connections → <a href="{{ctx.file_url('qgis-xyz-connections.xml')}}">qgis-xyz-connections.xml</a>.
   Web maps (gpx.studio's custom layer, Leaflet, OpenLayers) take the plain template:</p>
<ul>
% for layer in ctx.layers:
  <li><code>{{ctx.tile_url(layer, 'xyz')}}</code></li>
% end
</ul>
</section>
</body>
</html>
