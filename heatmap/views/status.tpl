<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Strava heatmap tiles</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em; color: #222 }
  .ok { color: #196c2e } .bad { color: #a4161a } code { background: #f3f3f3; padding: 0 .2em }
  dt { font-weight: 600 } dd { margin: 0 0 .5em 0 }
</style>
</head>
<body>
<h1>Strava heatmap tiles</h1>
% cookies = health['cookies']
% if cookies['valid']:
<p class="ok">The map works: the Strava cookies are valid until {{cookies['expires_at']}}.</p>
% else:
<p class="bad">Tiles above zoom {{settings.public_max_zoom if settings.public_tile_url else 0}} are not available: {{reason}}.</p>
% end
<dl>
  <dt>Cookies</dt>
  <dd>{{'valid' if cookies['valid'] else 'not valid'}}; expire {{cookies['expires_at'] or 'unknown'}};
      from {{cookies['source'] or 'nowhere yet'}}; last refresh {{cookies['refreshed_at'] or 'never'}}</dd>
  <dt>Refreshing now</dt><dd>{{'yes' if health['refreshing'] else 'no'}}</dd>
  % if cookies['last_error']:
  <dt>Last error</dt><dd class="bad">{{cookies['last_error']}}</dd>
  % end
  <dt>Tiles</dt>
  <dd>{{counters['tiles_served']}} served, {{counters['cache_hits']}} from the cache,
      {{counters['upstream_errors']}} upstream errors</dd>
  <dt>Tile URL</dt><dd><code>/tiles/{activity}/{color}/{z}/{x}/{y}.png</code>, e.g. <code>/tiles/all/hot/{z}/{x}/{y}.png</code></dd>
</dl>
% if not cookies['valid']:
<h2>Getting cookies</h2>
<ol>
  <li>Log in to strava.com in a desktop browser, export its cookies with an extension such as Cookie-Editor
      (JSON) and run <code>python redirector.py import-cookies export.json</code>.</li>
  <li>Or set <code>STRAVA_EMAIL</code> and <code>STRAVA_PASSWORD</code> to let this server log in itself
      (needs Chromium), or add <code>APIFY_TOKEN</code> and <code>APIFY_ACTOR</code> to log in on Apify.</li>
</ol>
<p>The README explains each way.</p>
% end
</body>
</html>
