% import json
% def script_value(value):
%     return json.dumps(value).replace('<', '\\u003c')
% end
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Offline packs: Strava heatmap</title>
<link rel="stylesheet" href="../static/leaflet/leaflet.css">
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em; color: #222 }
  .bad { color: #a4161a } .note { color: #555 } code { background: #f3f3f3; padding: 0 .2em }
  #map { height: 26em; border: 1px solid #ccc; background: #2b2b2b } #map.drawing { cursor: crosshair }
  fieldset { border: 1px solid #ddd; margin: 1em 0 } label { margin-right: 1em; white-space: nowrap }
  input[type=number] { width: 4em } #bbox { width: 20em } progress { width: 12em } li { margin: .4em 0 }
  #places { margin: .3em 0; padding-left: 1.2em } #places button { font: inherit; padding: 0; border: 0;
  background: none; color: #1a56a0; text-decoration: underline; cursor: pointer; text-align: left }
  #jobs button { margin-left: .5em }
</style>
</head>
<body>
<h1>Offline packs</h1>
<p>One layer of the heatmap for an area and a zoom range, in one file to copy to the phone: MBTiles for Locus,
   Guru Maps, OruxMaps and QGIS, or a <code>.sqlitedb</code> for OsmAnd. Packs hold at most {{f'{max_tiles:,}'}}
   tiles; requests to Strava go at {{f'{rate:g}'}} a second, tiles already cached are free, and tiles above
   zoom 15 are cut here from their zoom-15 tile.</p>
% if place_search:
<form id="search">
  <label>Find a place <input type="search" name="q" id="place" placeholder="e.g. Grindelwald"></label>
  <button type="submit">Search</button>
  <ul id="places" aria-live="polite"></ul>
</form>
% end
<div id="map" aria-label="the pack's area"></div>
<form id="pack">
  <fieldset>
    <legend>Layer and zooms</legend>
    <label>Layer <select name="layer" id="layer">
      % for layer in layers:
      <option value="{{'' if layer.kind == 'global' else layer.kind + '/'}}{{layer.activity}}/{{layer.color}}"
              data-route="{{layer.route}}">{{'my heatmap: ' if layer.kind == 'personal' else ''}}{{layer.activity}}/{{layer.color}}</option>
      % end
    </select></label>
    <label>Zooms <input type="number" id="min-zoom" min="0" max="{{max_zoom}}" value="10"> to
           <input type="number" id="max-zoom" min="0" max="{{max_zoom}}" value="15"></label>
    <label>Tile size <select name="px"><option>256</option><option>512</option></select> px</label>
    <label>File <select name="format"><option value="mbtiles">MBTiles</option>
                                      <option value="osmand">OsmAnd .sqlitedb</option></select></label>
  </fieldset>
  <fieldset>
    <legend>Area</legend>
    <p><label><input type="radio" name="area" value="view" checked> what the map shows</label></p>
    <p><label><input type="radio" name="area" value="bbox"> a box (west, south, east, north):</label>
       <input name="bbox" id="bbox" placeholder="7.90,46.50,8.10,46.65" autocomplete="off">
       <button type="button" id="draw">Draw it on the map</button></p>
    <p><label><input type="radio" name="area" value="track"> a track:</label>
       <input type="file" name="track" id="track" accept=".gpx,.geojson,.json">
       <label>within <input type="number" name="corridor_km" id="corridor" min="0.1" max="100" step="0.1" value="2">
              km either side</label></p>
  </fieldset>
  <button type="button" id="estimate">Estimate</button>
  <button type="button" id="start" disabled>Make the pack</button>
  <p id="answer" role="status"></p>
</form>
<h2>Packs</h2>
<ul id="jobs">
  % for job in jobs:
  <li data-job="{{job.id}}" data-status="{{job.status}}"></li>
  % end
</ul>
<script src="../static/leaflet/leaflet.js"></script>
<script>
  const key = new URLSearchParams(location.search).get('key');
  const keyQuery = key ? '?key=' + encodeURIComponent(key) : '';
  const form = document.getElementById('pack'), answer = document.getElementById('answer');
  const map = L.map('map').setView([46.55, 7.98], 11);
  const basemap = {{!script_value(basemap)}};
  if (basemap) {
    L.tileLayer(basemap, {maxZoom: 19, attribution: '© <a href="https://www.openstreetmap.org/copyright">' +
                                                     'OpenStreetMap</a> contributors'}).addTo(map);
  }
  let heat = null;
  const drawn = L.layerGroup().addTo(map);

  function showLayer() {
    if (heat) map.removeLayer(heat);
    const option = document.getElementById('layer').selectedOptions[0];
    const layer = option.value.split('/').slice(-2).join('/');
    heat = L.tileLayer(`../${option.dataset.route}/${layer}/{z}/{x}/{y}.png?px=256` +
                       (key ? '&key=' + encodeURIComponent(key) : ''),
                       {minZoom: 2, maxZoom: {{max_zoom}}, attribution: 'Heatmap © Strava'}).addTo(map);
  }
  document.getElementById('layer').onchange = showLayer;
  showLayer();

  function duration(seconds) {  // as the server words it
    if (seconds < 60) return `${Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
    return `${Math.floor(seconds / 3600)} h ${Math.round(seconds % 3600 / 60)} min`;
  }

  function chosenArea() {
    return form.querySelector('input[name=area]:checked').value;
  }

  function formData() {
    const data = new FormData(form), area = chosenArea();
    data.set('zooms', document.getElementById('min-zoom').value + '-' + document.getElementById('max-zoom').value);
    if (area === 'view') {
      const b = map.getBounds();
      data.set('bbox', [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(','));
    }
    if (area !== 'track') {
      data.delete('track');
      data.delete('corridor_km');
    } else {
      data.delete('bbox');
    }
    data.delete('area');
    return data;
  }

  async function send(path, options) {
    const response = await fetch(path + keyQuery, options);
    const text = await response.text();
    if (!response.ok) throw new Error(text.trim());
    return JSON.parse(text);
  }

  function tileBounds(z, x, y) {  // the tile's corners through Leaflet's own projection
    return L.latLngBounds(map.unproject([x * 256, y * 256], z), map.unproject([(x + 1) * 256, (y + 1) * 256], z));
  }

  // Drawing a box: two clicks on the map, at two opposite corners (a mouse or a finger alike).
  let corner = null;
  document.getElementById('draw').onclick = () => {
    corner = null;
    drawn.clearLayers();
    document.getElementById('map').classList.add('drawing');
    form.querySelector('input[value=bbox]').checked = true;
    answer.className = 'note';
    answer.textContent = 'click one corner of the box on the map, then the opposite corner';
  };
  map.on('click', (event) => {
    if (!document.getElementById('map').classList.contains('drawing')) return;
    if (corner === null) {
      corner = event.latlng;
      L.circleMarker(corner, {radius: 4, color: '#ffd400'}).addTo(drawn);
      return;
    }
    const box = L.latLngBounds(corner, event.latlng);
    document.getElementById('map').classList.remove('drawing');
    drawn.clearLayers();
    L.rectangle(box, {color: '#ffd400', weight: 2, fillOpacity: 0}).addTo(drawn);
    document.getElementById('bbox').value = [box.getWest(), box.getSouth(), box.getEast(), box.getNorth()]
      .map((v) => v.toFixed(5)).join(',');
    answer.className = '';
    answer.textContent = 'the box is set: estimate it';
  });
  document.getElementById('bbox').oninput = () => { form.querySelector('input[value=bbox]').checked = true; };
  document.getElementById('track').onchange = () => { form.querySelector('input[value=track]').checked = true; };

  document.getElementById('estimate').onclick = async () => {
    const start = document.getElementById('start'), estimate = document.getElementById('estimate');
    start.disabled = estimate.disabled = true;  // one count at a time: the server counts one upload at a time
    answer.className = '';
    answer.textContent = 'counting tiles…';
    try {
      const preview = await send('estimate', {method: 'POST', body: formData()});
      drawn.clearLayers();
      for (const [z, x, y] of preview.tiles) {
        L.rectangle(tileBounds(z, x, y), {color: '#4da3ff', weight: 1, fillOpacity: 0.05}).addTo(drawn);
      }
      L.geoJSON(preview.area, {style: {color: '#ffd400', weight: 2, fillOpacity: 0}}).addTo(drawn);
      const [west, south, east, north] = preview.bounds;
      map.fitBounds([[south, west], [north, east]]);
      answer.textContent = preview.estimate.summary +
        (preview.allowed ? '' : ` — ${preview.refusal}`) +
        (preview.existing ? ' — this pack exists already: it is in the list below' : '');
      answer.className = preview.allowed ? '' : 'bad';
      start.disabled = !preview.allowed;
    } catch (error) {
      answer.className = 'bad';
      answer.textContent = error.message;
    } finally {
      estimate.disabled = false;
    }
  };

  document.getElementById('start').onclick = async () => {
    document.getElementById('start').disabled = true;  // one click, one pack: estimate again for another
    try {
      const job = await send('', {method: 'POST', body: formData()});
      answer.textContent = job.existing ? 'this pack exists already: it is in the list below'
                                        : 'started: its progress is below';
      let item = document.querySelector(`#jobs li[data-job="${job.id}"]`);
      if (!item) {
        item = document.createElement('li');
        item.dataset.job = job.id;
        document.getElementById('jobs').prepend(item);
      }
      show(item, job);
      watch(item);
    } catch (error) {
      answer.className = 'bad';
      answer.textContent = error.message;
    }
  };

  function button(text, action) {
    const element = document.createElement('button');
    element.type = 'button';
    element.textContent = text;
    element.onclick = action;
    return element;
  }

  async function remove(item) {
    item.querySelectorAll('button').forEach((element) => { element.disabled = true; });
    try {
      const done = await send(item.dataset.job, {method: 'DELETE'});
      if (done.result === 'deleted') item.remove();
      else watch(item);
    } catch (error) {
      item.append(` — ${error.message}`);
    }
  }

  function show(item, job) {
    const request = job.request, progress = job.progress;
    item.dataset.status = job.status;
    item.textContent = request ? `${request.kind === 'personal' ? 'my heatmap ' : ''}` +
                                 `${request.activity}/${request.color}, ${request.area_name}, zooms ` +
                                 `${request.min_zoom}-${request.max_zoom}, ${request.format}: ` : 'damaged job: ';
    if (job.status === 'running') {
      const bar = document.createElement('progress');
      bar.max = progress.total;
      bar.value = progress.done;
      item.append(bar, ` ${progress.percent}%, ${progress.fetched} requests to Strava, ` +
                       `about ${duration(progress.seconds_left)} left` + (progress.note ? ` — ${progress.note}` : ''),
                  button('Cancel', () => remove(item)));
      return;
    }
    if (job.status === 'done') {
      const link = document.createElement('a');
      link.href = `${job.id}/${encodeURIComponent(job.download_name)}${keyQuery}`;
      link.textContent = job.download_name;
      item.append('ready: ', link);
    } else {
      const reason = document.createElement('span');
      reason.className = job.status === 'cancelled' ? 'note' : 'bad';
      reason.textContent = job.error;
      item.append(reason);
    }
    item.append(button('Delete', () => remove(item)));
  }

  async function watch(item) {  // only an item's latest watch goes on: none asks after a job once it is deleted
    const mine = item.watching = (item.watching || 0) + 1;
    const response = await fetch(`${item.dataset.job}.json${keyQuery}`);
    if (!response.ok || item.watching !== mine) return;
    const job = await response.json();
    if (item.watching !== mine) return;
    show(item, job);
    if (job.status === 'running') setTimeout(() => { if (item.watching === mine) watch(item); }, 1000);
  }
  document.querySelectorAll('#jobs li').forEach(watch);

  const search = document.getElementById('search');
  if (search) {
    const places = document.getElementById('places');
    search.onsubmit = async (event) => {
      event.preventDefault();
      places.textContent = 'searching…';
      try {
        const url = new URL({{!script_value(place_search)}}, location.href);
        url.search = new URLSearchParams({q: document.getElementById('place').value, format: 'jsonv2',
                                          limit: '5'});
        const response = await fetch(url);
        if (!response.ok) throw new Error(`the place search answered ${response.status}`);
        const found = await response.json();
        places.textContent = found.length ? '' : 'no such place';
        for (const place of found) {
          const [south, north, west, east] = place.boundingbox.map(Number);
          const item = document.createElement('li');
          item.append(button(place.display_name, () => map.fitBounds([[south, west], [north, east]])));
          places.append(item);
        }
        if (found.length) places.querySelector('button').click();
      } catch (error) {
        places.textContent = `the place search did not answer: ${error.message}`;
      }
    };
  }
</script>
</body>
</html>
