"""GET /metrics: Prometheus's text format, behind the admin token, counting what the server does."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT
from tests.test_keys import ADMIN, add_member
from tests.test_memory_cache import cached_file
from tests.test_tiles import heat_tile, import_cookies


def scrape(server, token: str = ADMIN) -> dict[tuple, float]:
    """Every sample of /metrics, by name and labels, read with prometheus-client's own parser."""
    answer = requests.get(server.url + '/metrics', headers={'Authorization': f'Bearer {token}'}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers['Content-Type'].startswith('text/plain; version=0.0.4')
    return {(sample.name, *sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_metrics_need_the_admin_token_and_their_counters_move_as_tiles_are_served(start_redirector, strava,
                                                                                   tmp_path):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    key = add_member(strava, data_dir, 'anna')
    server = start_redirector(HEATMAP_ADMIN_TOKEN=ADMIN)
    for headers in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': f'Bearer {ADMIN}x'}):
        refused = requests.get(server.url + '/metrics', headers=headers, timeout=10)
        assert refused.status_code == 403 and ADMIN not in refused.text
    before = scrape(server)
    assert before[('heatmap_tiles_served_total', ('answered', 'memory'))] == 0
    assert before[('heatmap_member_tiles_served_total', ('member', 'anna'))] == 0
    assert before[('heatmap_packs', ('state', 'running'))] == 0
    assert before[('heatmap_cookies_valid',)] == 1

    z, x, y = heat_tile()
    tile = f'/tiles/all/hot/{z}/{x}/{y}.png?key={key}'
    first = server.get(tile)  # from Strava
    assert first.status_code == 200
    cached_file(server, tile)  # its disk copy, then its memory copy, are kept just after the answer
    assert server.get(tile).status_code == 200  # from memory
    assert server.get(tile, headers={'If-Modified-Since': first.headers['Last-Modified']}).status_code == 304  # disk
    assert server.get(f'/tiles/all/hot/17/{4 * 17600}/{4 * 10750}.png?key={key}').status_code == 200  # overzoom
    strava.tile_status = 500
    assert server.get(f'/tiles/all/hot/{z}/{x + 1}/{y}.png?key={key}').status_code == 502
    strava.tile_status = None
    assert requests.post(server.url + '/admin/refresh', headers={'Authorization': f'Bearer {ADMIN}'},
                         timeout=10).status_code == 202
    server.wait_until(lambda: scrape(server).get(('heatmap_refreshes_total', ('result', 'ok'),
                                                  ('source', 'session'))) == 1, timeout=20)

    after = scrape(server)
    moved = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert {how: moved[('heatmap_tiles_served_total', ('answered', how))]
            for how in ('memory', 'disk', 'strava', 'overzoom', 'stale', 'error')} == \
        {'memory': 1, 'disk': 1, 'strava': 1, 'overzoom': 1, 'stale': 0, 'error': 1}
    tiles_from_strava = sum(moved.get(('heatmap_upstream_requests_total', ('status', status)), 0)
                            for status in ('200', '404'))
    assert tiles_from_strava == 2, 'the tile and the ancestor of the overzoomed one'
    assert moved[('heatmap_upstream_requests_total', ('status', '500'))] == 1
    assert moved[('heatmap_upstream_failures_total', ('status', '500'))] == 1
    assert moved[('heatmap_member_tiles_served_total', ('member', 'anna'))] == 4
    assert moved[('heatmap_member_tiles_fetched_total', ('member', 'anna'))] == 1
    assert after[('heatmap_cache_entries', ('cache', 'disk'))] >= 3  # the tile, the overzoom one and its ancestor
    assert after[('heatmap_cache_entries', ('cache', 'memory'))] >= 1
    assert after[('heatmap_cache_bytes', ('cache', 'disk'))] >= 3 * 4096
    details = server.get(f'/healthz?key={key}').json()  # the member's key: a server with keys shows them to keys only
    expires = datetime.fromisoformat(details['cookies']['expires_at'].replace('Z', '+00:00')).timestamp()
    assert abs(after[('heatmap_cookies_expiry_timestamp_seconds',)] - expires) < 1
    assert ADMIN not in requests.get(server.url + '/metrics', headers={'Authorization': f'Bearer {ADMIN}'},
                                     timeout=10).text and key not in server.logs()


def test_metrics_are_off_without_an_admin_token_like_every_admin_route(start_redirector):
    server = start_redirector()
    answer = server.get('/metrics')
    assert answer.status_code == 404 and 'HEATMAP_ADMIN_TOKEN' in answer.text


def test_the_prometheus_scrape_config_in_deploy_scrapes_the_server(start_redirector, tmp_path):
    job, = yaml.safe_load((ROOT / 'deploy' / 'prometheus.yml').read_text())['scrape_configs']
    assert job['authorization']['type'] == 'Bearer' and 'credentials' not in job['authorization'], \
        'the token comes from a file, not from the config'
    token_file = Path(job['authorization']['credentials_file'])
    assert token_file.is_absolute() and job['static_configs'][0]['targets']
    server = start_redirector(HEATMAP_ADMIN_TOKEN=ADMIN)
    (tmp_path / token_file.name).write_text(ADMIN + '\n')  # as an editor saves it: Prometheus trims the newline
    token = (tmp_path / token_file.name).read_text().strip()
    answer = requests.get(server.url + job['metrics_path'], headers={'Authorization': f"{job['authorization']['type']} "
                                                                                      f'{token}'}, timeout=10)
    assert answer.status_code == 200
    assert any(family.name == 'heatmap_tiles_served' for family in text_string_to_metric_families(answer.text))
