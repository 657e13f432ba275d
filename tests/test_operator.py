"""What the operator reads: advice that can be followed as written, absolute URLs, plain-text errors,
admin imports in the log."""

from __future__ import annotations

import html
import json
import re
import shlex
import subprocess

import requests

from tests.conftest import PASSWORD, ROOT, cookie_export, redirector_env


def test_advice_on_the_status_page_can_be_followed_as_written(start_redirector, strava, apify):
    server = start_redirector(HEATMAP_AUTH='apify', APIFY_API_URL=apify.url, APIFY_TOKEN=apify.token,
                              APIFY_ACTOR=apify.actor_id, STRAVA_EMAIL='rider@example.com',
                              STRAVA_PASSWORD='wrong horse', HEATMAP_PUBLIC_URL='https://maps.example.org/heat')
    error = server.wait_until(lambda: server.health()['cookies']['last_error'], timeout=90)
    page = server.get('/').text
    assert 'bad_credentials' in page
    assert 'Refresh now' not in page, 'no admin token: that button does not exist'
    assert 'redirector.py login`' in page
    assert '(see /)' not in page
    assert page.count(html.escape(error)) == 1, 'said once'
    assert 'https://maps.example.org/heat/tiles/{activity}/{color}/{z}/{x}/{y}.png' in page
    assert PASSWORD not in page and 'wrong horse' not in page


def test_the_cli_command_on_the_page_runs_with_the_servers_interpreter(start_redirector, strava, tmp_path):
    server = start_redirector()
    page = server.get('/').text
    shown = re.search(r'<code>([^<]*) import-cookies export.json</code>', page)
    assert shown, 'the page shows the command that imports an export'
    (tmp_path / 'export.json').write_text(cookie_export(strava, 3600))
    env = redirector_env(strava, server.data_dir)
    command = [*shlex.split(html.unescape(shown.group(1))), 'import-cookies', str(tmp_path / 'export.json')]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server.wait_until(lambda: server.health()['cookies']['valid'], timeout=10)


def test_every_error_is_plain_text(start_redirector):
    server = start_redirector()
    for method, path, status in (('GET', '/no/such/page', 404), ('PUT', '/healthz', 405),
                                 ('GET', '/tiles/all/hot/1/1/9.png', 400)):
        answer = requests.request(method, server.url + path, timeout=5)
        assert answer.status_code == status
        assert answer.headers['Content-Type'].startswith('text/plain'), path
        assert '<' not in answer.text
    missing = requests.get(server.url + '/no/such/page', timeout=5).text
    for route in ('/healthz', '/livez', '/presets/', '/packs/', '/tiles/{activity}', '/personal/{activity}'):
        assert route in missing, f'the 404 names {route}'


def test_admin_imports_are_logged_without_values_and_an_older_one_needs_force(start_redirector, strava):
    server = start_redirector(HEATMAP_ADMIN_TOKEN='admin-token')
    headers = {'Authorization': 'Bearer admin-token'}
    newer, older = cookie_export(strava, 7200), cookie_export(strava, 3600)
    assert requests.post(server.url + '/admin/cookies', data=newer, headers=headers, timeout=5).status_code == 200
    refused = requests.post(server.url + '/admin/cookies', data=older, headers=headers, timeout=5)
    assert refused.status_code == 409 and 'newer' in refused.text
    assert server.health()['cookies']['expires_at'] > server.health()['cookies']['refreshed_at']
    forced = requests.post(server.url + '/admin/cookies?force=1', data=older, headers=headers, timeout=5)
    assert forced.status_code == 200

    logs = server.logs()
    imported = 'cookies imported by an admin from 127.0.0.1: session cookie: yes; CloudFront cookies: all 3'
    assert logs.count(imported) == 2
    assert 'refused an admin import from 127.0.0.1: the stored tile cookies are newer' in logs
    values = [c['value'] for c in json.loads(newer) + json.loads(older) if len(c['value']) > 8]
    assert not [value for value in values if value in logs]
