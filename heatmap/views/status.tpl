<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Strava heatmap tiles</title>
<link rel="stylesheet" href="/static/leaflet/leaflet.css">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; color: #222 }
  .ok { color: #196c2e } .bad { color: #a4161a } code { background: #f3f3f3; padding: 0 .2em }
  dt { font-weight: 600 } dd { margin: 0 0 .5em 0 }
  #map { height: 22em; border: 1px solid #ccc; background: #2b2b2b }
  textarea { width: 100%; height: 6em } .admin { border-top: 1px solid #ddd; margin-top: 2em }
  #admin-result { white-space: pre-wrap; overflow-wrap: anywhere }
  #members td, #members th { padding: 0 .6em 0 0; text-align: left } #members td.count { text-align: right }
</style>
</head>
<body>
<h1>Strava heatmap tiles</h1>
% cookies = health['cookies']
% if health['ok']:
<p class="ok" id="state">The map works: the Strava cookies are valid until {{cookies['expires_at']}}
  (<span id="countdown" data-expires="{{cookies['expires_at']}}">…</span>).</p>
% else:
<p class="bad" id="state">Detailed tiles are not available: {{health['reason']}}.</p>
  % if state.last_error_reason or state.rejected_at:
<p id="advice">{{advice}} {{'Automatic logins are paused until then.' if waiting_for_user else ''}}</p>
  % end
% end
% if health['warning']:
<p class="bad" id="warning">{{health['warning']}}. New tiles are served without a disk copy until then.</p>
% end
<dl>
  <dt>Cookies</dt>
  <dd>{{'valid' if cookies['valid'] else 'not valid'}}; expire {{cookies['expires_at'] or 'unknown'}};
      from {{cookies['source'] or 'nowhere yet'}}; last refresh {{cookies['refreshed_at'] or 'never'}}</dd>
  <dt>Refreshing now</dt><dd>{{'yes' if health['refreshing'] else 'no'}}</dd>
  % if health['accounts']:
  <dt>Login accounts</dt>
  <dd><ul id="accounts">
  % for account in health['accounts']:
    <li>{{account['email']}}: {{account['state']}}</li>
  % end
  </ul></dd>
  % end
  % if health['browsers']:
  <dt>Paired browsers</dt>
  <dd><ul id="browsers">
  % for browser in health['browsers']:
    <li>{{browser['name']}}: {{('last push ' + browser['last_push_at'] + ': ' + browser['last_result']) if browser['last_push_at'] else 'no push yet'}}
      % if settings.admin_token:
      <button type="button" class="revoke" data-name="{{browser['name']}}">Revoke</button>
      % end
    </li>
  % end
  </ul></dd>
  % end
  <dt>Tiles</dt>
  <dd>{{counters['tiles_served']}} served, {{counters['cache_hits']}} from the cache,
      {{counters['upstream_errors']}} upstream errors, {{counters['rate_limited']}} slowed down</dd>
  <dt>Tile URL</dt>
  <dd><code id="tile-url">{{tile_url}}</code>{{'?key=…' if keys_required else ''}};
      ready-made settings for each app: <a id="presets-link" href="/presets/">presets</a>;
      the heatmap of a trip area for the phone without signal: <a id="packs-link" href="/packs/">offline packs</a></dd>
</dl>
<div id="map" aria-label="heatmap preview"></div>
% if not state.cookies:
<h2>Getting cookies</h2>
<ol>
  <li>Let your own browser send them: install the extension from this project's <code>extension/</code> folder,
      pair it (<code>{{cli}} pair laptop</code>, or below with the admin token) and log in to strava.com in it.</li>
  <li>Or log in to strava.com in a desktop browser, export its cookies with an extension such as Cookie-Editor
      (JSON) and run <code>{{cli}} import-cookies export.json</code>.</li>
  <li>Or set <code>STRAVA_EMAIL</code> and <code>STRAVA_PASSWORD</code> to let this server log in itself
      (needs Chromium), or add <code>APIFY_TOKEN</code> and <code>APIFY_ACTOR</code> to log in on Apify. An account
      that logs in with the code Strava emails needs its mailbox instead of (or beside) the password:
      <code>STRAVA_IMAP_URL</code> and <code>STRAVA_IMAP_PASSWORD</code>.</li>
</ol>
<p>The README explains each way.</p>
% end
% if settings.admin_token:
<section class="admin">
  <h2>Admin</h2>
  <p><label>Admin token <input type="password" id="token" autocomplete="off"></label>
     <button type="button" id="refresh">Refresh now</button></p>
  <p><label>Cookie export (JSON, cookies.txt or a Cookie header)<br><textarea id="export"></textarea></label>
     <button type="button" id="import">Import</button></p>
  <p><label>Browser name <input id="browser-name" placeholder="laptop" autocomplete="off"></label>
     <button type="button" id="pair">Pair a browser</button> (the push token for its extension appears below, once)</p>
  <p><label>Member name <input id="member-name" placeholder="anna" autocomplete="off"></label>
     <button type="button" id="add-member">Give a member a key</button> (the key appears below, once)
     <button type="button" id="show-members">Show the members</button></p>
  <table id="members" hidden>
    <thead><tr><th>member</th><th>tiles served</th><th>fetched from Strava</th><th>last seen</th><th>key made</th><th></th></tr></thead>
    <tbody></tbody>
  </table>
  <p id="admin-result" role="status"></p>
</section>
% end
<script src="/static/leaflet/leaflet.js"></script>
<script>
  const key = new URLSearchParams(location.search).get('key');
  const query = '?px=256' + (key ? '&key=' + encodeURIComponent(key) : '');
  if (key) {
    for (const id of ['presets-link', 'packs-link']) document.getElementById(id).search = '?key=' + encodeURIComponent(key);
  }
  const map = L.map('map').setView([46.55, 7.98], 12);
  const options = {minZoom: 2, maxZoom: {{max_zoom}}, attribution: 'Heatmap © Strava'};
  const everyone = L.tileLayer('/tiles/all/hot/{z}/{x}/{y}.png' + query, options).addTo(map);
  % if personal:
  L.control.layers({'Global heatmap': everyone,
                    'My heatmap': L.tileLayer('/personal/all/hot/{z}/{x}/{y}.png' + query, options)}).addTo(map);
  % end

  const countdown = document.getElementById('countdown');
  function tick() {
    const left = (Date.parse(countdown.dataset.expires) - Date.now()) / 1000;
    countdown.textContent = left > 0
      ? `${Math.floor(left / 3600)} h ${Math.floor(left % 3600 / 60)} min left` : 'expired';
  }
  if (countdown) { tick(); setInterval(tick, 30000); }

  const bearer = () => ({'Authorization': 'Bearer ' + document.getElementById('token').value});
  async function admin(path, body, method = 'POST') {
    const response = await fetch(path, {method, body, headers: bearer()});
    document.getElementById('admin-result').textContent = await response.text();
    return response.ok;
  }
  async function showMembers() {
    const response = await fetch('/admin/keys', {headers: bearer()});
    if (!response.ok) {
      document.getElementById('admin-result').textContent = await response.text();
      return;
    }
    const {members, problem} = await response.json();
    const rows = document.querySelector('#members tbody');
    rows.replaceChildren(...members.map(member => {
      const row = document.createElement('tr');
      for (const [value, kind] of [[member.name], [member.served, 'count'], [member.fetched, 'count'],
                                   [member.last_seen || 'never'], [member.created_at]]) {
        const cell = row.insertCell();
        cell.textContent = value;
        if (kind) cell.className = kind;
      }
      const revoke = document.createElement('button');
      revoke.type = 'button';
      revoke.className = 'revoke-member';
      revoke.textContent = 'Revoke';
      revoke.onclick = async () => {
        if (await admin('/admin/keys/' + encodeURIComponent(member.name), null, 'DELETE')) showMembers();
      };
      row.insertCell().append(revoke);
      return row;
    }));
    if (!members.length) rows.insertRow().insertCell().textContent = 'no member has a key yet';
    document.getElementById('members').hidden = false;
    if (problem) document.getElementById('admin-result').textContent = problem;
  }
  const refreshButton = document.getElementById('refresh');
  if (refreshButton) {
    refreshButton.onclick = () => admin('/admin/refresh', '');
    document.getElementById('import').onclick = () => admin('/admin/cookies', document.getElementById('export').value);
    document.getElementById('pair').onclick = () =>
      admin('/admin/browsers', new URLSearchParams({name: document.getElementById('browser-name').value}));
    for (const button of document.querySelectorAll('button.revoke')) {
      button.onclick = () => admin('/admin/browsers/' + encodeURIComponent(button.dataset.name), null, 'DELETE');
    }
    document.getElementById('add-member').onclick = async () => {
      const name = document.getElementById('member-name').value;
      if (await admin('/admin/keys', new URLSearchParams({name}))) showMembers();
    };
    document.getElementById('show-members').onclick = showMembers;
  }
</script>
</body>
</html>
