<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Strava heatmap tiles</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; color: #222 }
  .ok { color: #196c2e } .bad { color: #a4161a } code { background: #f3f3f3; padding: 0 .2em }
</style>
</head>
<body>
<h1>Strava heatmap tiles</h1>
% if health['ok']:
<p class="ok" id="state">The map works.</p>
% else:
<p class="bad" id="state">Detailed tiles are not available: {{health['reason']}}.</p>
% end
<p id="key-needed">This server needs a key. The details (the cookies, the login accounts, the paired browsers, the
   last errors and a preview) show with it: add <code>?key=…</code> to this page's address.</p>
</body>
</html>
