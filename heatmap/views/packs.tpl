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
  .bad { color: #a4161a } code { background: #f3f3f3; padding: 0 .2em }
  #map { height: 24em; border: 1px solid #ccc; background: #2b2b2b }
  fieldset { border: 1px solid #ddd; margin: 1em 0 } label { margin-right: 1em; white-space: nowrap }
  input[type=number] { width: 4em } progress { width: 14em } li { margin: .4em 0 }
</style>
</head>
<body>
<h1>Offline packs</h1>
<p>One layer of the heatmap for an area and a zoom range, in one file to copy to the phone: MBTiles for Locus,
   Guru Maps, OruxMaps and QGIS, or a <code>.sqlitedb</code> for OsmAnd. Packs hold at most {{f'{max_tiles:,}'}}
   tiles; new tiles come from Strava at {{f'{rate:g}'}} a second, tiles already cached are free.</p>
<div id="map" aria-label="the pack's area"></div>
<form id="pack">
  <fieldset>
    <legend>Layer and zooms</legend>
    <label>Layer <select name="layer" id="layer">
      % for layer in layers:
      <option>{{layer.activity}}/{{layer.color}}</option>
      % end
    </select></label>
    <label>Zooms <input type="number" id="min-zoom" min="0" max="16" value="10"> to
           <input type="number" id="max-zoom" min="0" max="16" value="15"></label>
    <label>Tile size <select name="px"><option>256</option><option>512</option></select> px</label>
    <label>File <select name="format"><option value="mbtiles">MBTiles</option>
                                      <option value="osmand">OsmAnd .sqlitedb</option></select></label>
  </fieldset>
  <fieldset>
    <legend>Area</legend>
    <label><input type="radio" name="area" value="view" checked> what the map shows</label>
    <label><input type="radio" name="area" value="track"> a track:</label>
    <input type="file" name="track" id="track" accept=".gpx,.geojson,.json">
    <label>within <input type="number" name="corridor_km" id="corridor" min="0.1" max="100" step="0.1" value="2">
           km either side</label>
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
  let heat = null;
  const drawn = L.layerGroup().addTo(map);

  function showLayer() {
    if (heat) map.removeLayer(heat);
    heat = L.tileLayer(`../tiles/${document.getElementById('layer').value}/{z}/{x}/{y}.png?px=256` +
                       (key ? '&key=' + encodeURIComponent(key) : ''),
                       {minZoom: 2, maxZoom: 16, attribution: 'Heatmap © Strava'}).addTo(map);
  }
  document.getElementById('layer').onchange = showLayer;
  showLayer();

  function formData() {
    const data = new FormData(form);
    data.set('zooms', document.getElementById('min-zoom').value + '-' + document.getElementById('max-zoom').value);
    if (data.get('area') === 'view') {
      const b = map.getBounds();
      data.set('bbox', [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(','));
      data.delete('track');
      data.delete('corridor_km');
    }
    data.delete('area');
    return data;
  }

  async function send(path, data) {
    const response = await fetch(path + keyQuery, {method: 'POST', body: data});
    const text = await response.text();
    if (!response.ok) throw new Error(text.trim());
    return JSON.parse(text);
  }

  function tileBounds(z, x, y) {  // the tile's corners through Leaflet's own projection
    return L.latLngBounds(map.unproject([x * 256, y * 256], z), map.unproject([(x + 1) * 256, (y + 1) * 256], z));
  }

  document.getElementById('estimate').onclick = async () => {
    const start = document.getElementById('start');
    start.disabled = true;
    answer.className = '';
    answer.textContent = 'counting tiles…';
    try {
      const preview = await send('estimate', formData());
      drawn.clearLayers();
      for (const [z, x, y] of preview.tiles) {
        L.rectangle(tileBounds(z, x, y), {color: '#4da3ff', weight: 1, fillOpacity: 0.05}).addTo(drawn);
      }
      const area = L.geoJSON(preview.area, {style: {color: '#ffd400', weight: 2, fillOpacity: 0}}).addTo(drawn);
      map.fitBounds(area.getBounds());
      answer.textContent = preview.estimate.summary +
        (preview.allowed ? '' : ` — more than the ${preview.max_tiles.toLocaleString()} allowed: ` +
                                'choose a narrower corridor, a smaller area or fewer zooms');
      answer.className = preview.allowed ? '' : 'bad';
      start.disabled = !preview.allowed;
    } catch (error) {
      answer.className = 'bad';
      answer.textContent = error.message;
    }
  };

  document.getElementById('start').onclick = async () => {
    document.getElementById('start').disabled = true;  // one click, one pack: estimate again for another
    try {
      const job = await send('', formData());
      answer.textContent = 'started: its progress is below';
      const item = document.createElement('li');
      item.dataset.job = job.id;
      document.getElementById('jobs').prepend(item);
      show(item, job);
      watch(item);
    } catch (error) {
      answer.className = 'bad';
      answer.textContent = error.message;
    }
  };

  function show(item, job) {
    const request = job.request, progress = job.progress;
    item.dataset.status = job.status;
    item.textContent = `${request.activity}/${request.color}, ${request.area_name}, zooms ` +
                       `${request.min_zoom}-${request.max_zoom}, ${request.format}: `;
    if (job.status === 'running') {
      const bar = document.createElement('progress');
      bar.max = progress.total;
      bar.value = progress.done;
      item.append(bar, ` ${progress.percent}%, ${progress.fetched} new from Strava` +
                       (progress.note ? ` — ${progress.note}` : ''));
    } else if (job.status === 'done') {
      const link = document.createElement('a');
      link.href = `${job.id}/${encodeURIComponent(job.download_name)}${keyQuery}`;
      link.textContent = job.download_name;
      item.append('ready: ', link);
    } else {
      const reason = document.createElement('span');
      reason.className = 'bad';
      reason.textContent = job.error;
      item.append(reason);
    }
  }

  async function watch(item) {
    const response = await fetch(`${item.dataset.job}.json${keyQuery}`);
    if (!response.ok) return;
    const job = await response.json();
    show(item, job);
    if (job.status === 'running') setTimeout(() => watch(item), 1000);
  }
  document.querySelectorAll('#jobs li').forEach(watch);
</script>
</body>
</html>
