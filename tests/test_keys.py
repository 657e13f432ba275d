"""A server for a club: a key per member, each member's usage, revocation that bites at once, fair use per member."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
import requests

from tests.conftest import redirector_env, run_cli
from tests.test_packs_hostile import receive_all, socket_to
from tests.test_status_page import open_page
from tests.test_tiles import heat_tile, import_cookies

OPERATOR_KEY = 'operator-key-0123456789'
ADMIN = 'admin-token-0123456789'


def add_member(strava, data_dir, name: str) -> str:
    done = run_cli('keys', 'add', name, env=redirector_env(strava, data_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def keys_list(strava, data_dir) -> dict[str, str]:
    done = run_cli('keys', 'list', env=redirector_env(strava, data_dir))
    assert done.returncode == 0, done.stderr
    return {line.split(':', 1)[0]: line for line in done.stdout.splitlines()}


@pytest.fixture
def club(start_redirector, strava, tmp_path):
    """A server with two members, anna and ben, and no operator key: a key is needed."""
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    keys = {name: add_member(strava, data_dir, name) for name in ('anna', 'ben')}
    return start_redirector(HEATMAP_LOG_LEVEL='DEBUG', HEATMAP_ADMIN_TOKEN=ADMIN), keys


def tile_url(x: int, key: str, z: int = 13) -> str:
    return f'/tiles/all/hot/{z}/{x}/2686.png?px=256&key={key}'


def test_keys_add_prints_the_key_last_keeps_only_its_hash_and_says_each_mistake_in_one_line(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data')
    added = run_cli('keys', 'add', 'anna', env=env)
    assert added.returncode == 0, added.stderr
    key = added.stdout.splitlines()[-1]
    assert len(key) >= 40 and 'anna' in added.stdout.splitlines()[0]
    stored = tmp_path / 'data' / 'keys.json'
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    entry = json.loads(stored.read_text())['keys']['1']['keys']['anna']
    assert key not in stored.read_text() and len(entry['hash']) == 64

    again = run_cli('keys', 'add', 'anna', env=env).stdout
    assert 'earlier key, which no longer works' in again and again.splitlines()[-1] != key
    listed = run_cli('keys', 'list', env=env)
    assert listed.returncode == 0 and listed.stdout.startswith('anna: 0 tiles served, 0 fetched from Strava, not seen')

    for args, message in ((('keys', 'revoke', 'nobody'), "no member named 'nobody' has a key (see keys list)"),
                          (('keys', 'add'), "keys add needs the member's NAME, e.g. keys add anna"),
                          (('keys', 'add', 'a;rm -rf'), "a member's name is 1 to 40 letters, digits, spaces, dots, "
                                                       'dashes or underscores, e.g. anna')):
        done = run_cli(*args, env=env)
        assert (done.returncode, done.stderr) == (2, message + '\n'), args
    revoked = run_cli('keys', 'revoke', 'anna', env=env)
    assert revoked.returncode == 0 and 'refused from now on' in revoked.stdout
    assert run_cli('keys', 'list', env=env).stdout.startswith('no member has a key')


def test_a_revoked_keys_hot_tiles_answer_403_within_5_s_while_the_other_members_stay_200(club, strava):
    server, keys = club
    z, x, y = heat_tile()
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png').status_code == 403, 'a server with member keys is not open'
    urls = {name: f'/tiles/all/hot/{z}/{x}/{y}.png?px=256&key={key}' for name, key in keys.items()}
    for _ in range(3):  # the second and third come from memory, before any routing
        for url in urls.values():
            assert server.get(url).status_code == 200
    etag = server.get(urls['anna']).headers['ETag']
    assert strava.counters['tiles'] == 1, 'one tile for both members, from memory after the first'

    revoked = run_cli('keys', 'revoke', 'anna', env=redirector_env(strava, server.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    since = time.monotonic()
    server.wait_until(lambda: server.get(urls['anna']).status_code == 403, timeout=10, interval=0.05)
    assert time.monotonic() - since < 5
    assert server.get(urls['anna'], headers={'If-None-Match': etag}).status_code == 403
    assert server.get(urls['anna'].replace('px=256&', '')).status_code == 403
    for _ in range(3):
        assert server.get(urls['ben']).status_code == 200
    assert server.get(urls['ben'], headers={'If-None-Match': etag}).status_code == 304
    assert "member keys revoked or replaced: 'anna'" in server.logs()

    assert run_cli('keys', 'revoke', 'ben', env=redirector_env(strava, server.data_dir)).returncode == 0
    server.wait_until(lambda: server.get(urls['ben']).status_code == 403, timeout=5, interval=0.05)
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?px=256').status_code == 403, \
        'revoking the last key does not open the server'


def test_usage_counts_match_the_requests_made(club, strava):
    server, keys = club
    anna_new = [tile_url(x, keys['anna']) for x in range(4400, 4405)]
    for url in anna_new + anna_new[:3] + anna_new[:1]:  # 5 from Strava, then 4 from memory or disk
        assert server.get(url).status_code == 200
    assert server.get(anna_new[0].replace('.png', '@2x.png').replace('/13/', '/99/')).status_code == 400
    ben = [tile_url(x, keys['ben']) for x in (4400, 4401, 4420)]  # 2 cached by anna's, 1 from Strava
    for url in ben:
        assert server.get(url).status_code == 200
    assert server.get(tile_url(4400, 'not-a-key')).status_code == 403
    expected = {'anna': (9, 5), 'ben': (3, 1)}

    def counted():
        listed = requests.get(server.url + '/admin/keys', headers={'Authorization': f'Bearer {ADMIN}'},
                              timeout=10).json()['members']
        return {m['name']: (m['served'], m['fetched']) for m in listed} == expected and listed
    members = server.wait_until(counted, timeout=10)
    assert all(m['last_seen'] for m in members)

    def written():  # the server adds what it counted to keys.json every few seconds
        listed = keys_list(strava, server.data_dir)
        return all(f'{name}: {served} tiles served, {fetched} fetched from Strava, last seen' in listed[name]
                   for name, (served, fetched) in expected.items())
    server.wait_until(written, timeout=15, interval=0.5)


def test_a_members_presets_hold_their_own_key_and_no_other(start_redirector, strava, tmp_path):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    keys = {name: add_member(strava, data_dir, name) for name in ('anna', 'ben')}
    server = start_redirector(HEATMAP_ACCESS_KEY=OPERATOR_KEY)
    everyone = {**keys, 'operator': OPERATOR_KEY}
    for name, key in everyone.items():
        page = server.get('/presets/', params={'key': key})
        assert page.status_code == 200
        files = [page.text] + [server.get(f'/presets/{file}', params={'key': key}).content.decode('latin1')
                               for file in ('osmand-all-hot.metainfo', 'locus-strava-heatmap.xml',
                                            'josm-imagery.xml', 'osmand-ride-hot.sqlitedb')]
        for text in files:
            assert key in text, name
            assert not any(other in text for who, other in everyone.items() if who != name), name
        assert f'/tiles/all/hot/{{z}}/{{x}}/{{y}}.png?px=256&amp;key={key}' in page.text, 'the web map template'
        tile = server.get('/tiles/all/hot/13/4400/2686.png', params={'px': 256, 'key': key})
        assert tile.status_code == 200, 'the presets\' URL is served'
    personal_layers = 'personal-all-hot'
    assert personal_layers in server.get('/presets/', params={'key': OPERATOR_KEY}).text
    assert personal_layers not in server.get('/presets/', params={'key': keys['anna']}).text, \
        "a member's presets leave out the operator's personal heatmap"


def test_the_rate_limit_of_new_tiles_is_each_members_own(start_redirector, strava, tmp_path):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    keys = {name: add_member(strava, data_dir, name) for name in ('anna', 'ben')}
    server = start_redirector(HEATMAP_RATE_LIMIT=3, HEATMAP_ACCESS_KEY=OPERATOR_KEY)

    anna = [server.get(tile_url(x, keys['anna'])) for x in range(4400, 4405)]
    assert [a.status_code for a in anna] == [200, 200, 200, 429, 429]
    assert int(anna[3].headers['Retry-After']) >= 1 and 'slow down' in anna[3].text
    assert server.get(tile_url(4400, keys['anna'])).status_code == 200, 'cached tiles are not limited'
    ben = [server.get(tile_url(x, keys['ben'])).status_code for x in range(4410, 4414)]
    assert ben == [200, 200, 200, 429], "anna's budget is not ben's"
    operator = [server.get(tile_url(x, OPERATOR_KEY)).status_code for x in range(4420, 4424)]
    assert operator == [200, 200, 200, 429], 'the members did not spend the address\'s budget'


def test_member_keys_open_packs_and_their_uploads_and_the_personal_heatmap_only_if_allowed(start_redirector, strava,
                                                                                            tmp_path):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    key = add_member(strava, data_dir, 'anna')
    personal = f'/personal/all/hot/13/4400/2686.png?px=256&key={key}'
    server = start_redirector(HEATMAP_ACCESS_KEY=OPERATOR_KEY)
    refused = server.get(personal)
    assert refused.status_code == 403 and 'HEATMAP_MEMBERS_PERSONAL=1' in refused.text
    assert server.get(personal.replace(key, OPERATOR_KEY)).status_code == 200
    assert server.get(personal).status_code == 403, 'nor from memory, where the operator put it'
    assert server.get('/packs/', params={'key': key}).status_code == 200
    estimate = requests.post(server.url + '/packs/estimate', params={'key': key}, timeout=30,
                             data={'layer': 'personal/all/hot', 'zooms': '10', 'bbox': '7.40,46.90,7.50,46.96'})
    assert estimate.status_code == 403 and 'HEATMAP_MEMBERS_PERSONAL' in estimate.text
    for query, allowed in ((f'?key={key}', True), ('?key=not-a-key', False)):
        with socket_to(server) as connection:  # a 20 MB track upload: its body is awaited with a key, else refused
            connection.sendall(f'POST /packs/estimate{query} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data;'
                               f' boundary=b\r\nContent-Length: {20 * 2 ** 20}\r\n\r\n'.encode())
            connection.settimeout(2)
            try:
                answer = receive_all(connection)
            except TimeoutError:
                answer = 'waiting for the body'
        assert answer.startswith('HTTP/1.1 413 ') != allowed, (query, answer)
    server.stop()

    allowed = start_redirector(HEATMAP_ACCESS_KEY=OPERATOR_KEY, HEATMAP_MEMBERS_PERSONAL=1)
    assert allowed.get(personal).status_code == 200
    assert 'personal-all-hot' in allowed.get('/presets/', params={'key': key}).text


def test_keys_never_appear_in_logs_or_files_but_the_hashed_store(club, strava):
    server, keys = club
    z, x, y = heat_tile()
    for key in keys.values():
        for _ in range(2):
            assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?key={key}').status_code == 200
        assert server.get('/presets/', params={'key': key}).status_code == 200
    assert server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?key={keys["anna"]}x').status_code == 403
    assert run_cli('keys', 'revoke', 'anna', env=redirector_env(strava, server.data_dir)).returncode == 0
    server.wait_until(lambda: server.get(f'/tiles/all/hot/{z}/{x}/{y}.png?key={keys["anna"]}').status_code == 403,
                      timeout=5)
    server.wait_until(lambda: "ben: 2 tiles served" in keys_list(strava, server.data_dir).get('ben', ''), timeout=15)
    log = server.logs()
    assert "for 127.0.0.1 (member 'anna')" in log and "member 'ben'" in log
    assert 'rejected a request with a missing or wrong key' in log
    stored = json.loads((server.data_dir / 'keys.json').read_text())['keys']['1']['keys']
    secrets = [*keys.values(), *(entry['hash'] for entry in stored.values())]
    for secret in secrets:
        assert secret not in log
    for folder, _, names in os.walk(server.data_dir):
        for name in names:
            with open(os.path.join(folder, name), 'rb') as file:
                content = file.read()
            assert not any(key.encode() in content for key in keys.values()), name


def test_the_admin_adds_lists_and_revokes_members_on_the_status_page(club, strava, chromium):
    server, keys = club
    assert server.get(tile_url(4400, keys['ben'])).status_code == 200
    assert 'ben' not in server.get('/').text, 'members and their usage are for the admin token only'

    def add_and_list(page):
        page.fill('#token', ADMIN)
        page.fill('#member-name', 'carla')
        page.click('#add-member')
        page.wait_for_function("document.querySelectorAll('#members tbody tr').length == 3")
        rows = page.eval_on_selector_all('#members tbody tr', 'rows => rows.map(r => r.innerText)')
        return page.text_content('#admin-result'), rows

    page = f'{server.url}/?key={keys["anna"]}'  # the page's map shows tiles with anna's key
    _, errors, _, (shown, rows) = open_page(chromium, page, add_and_list)
    assert errors == []
    carla = shown.strip().splitlines()[-1]
    assert [row.split('\t')[0] for row in rows] == ['anna', 'ben', 'carla']
    assert rows[1].split('\t')[1:3] == ['1', '1'], "ben's tile, fetched from Strava for him"
    assert server.get(tile_url(4401, carla)).status_code == 200, "carla's key works at once"

    def revoke_carla(page):
        page.fill('#token', ADMIN)
        page.click('#show-members')
        page.wait_for_selector('#members tbody tr:nth-child(3) button.revoke-member')
        page.click('#members tbody tr:nth-child(3) button.revoke-member')
        page.wait_for_function("document.getElementById('admin-result').textContent.includes('revoked')")
        page.wait_for_function("document.querySelectorAll('#members tbody tr').length == 2")

    _, errors, _, _ = open_page(chromium, page, revoke_carla)
    assert errors == []
    assert server.get(tile_url(4401, carla)).status_code == 403
    assert carla not in server.logs() and carla not in server.get('/').text


def test_a_damaged_keys_file_refuses_member_keys_until_a_new_key_is_added_and_the_server_still_starts(
        start_redirector, strava, tmp_path):
    data_dir = tmp_path / 'data'
    import_cookies(strava, data_dir)
    old = add_member(strava, data_dir, 'anna')
    (data_dir / 'keys.json').write_text('{"keys": {"1": {"keys": {"anna": "no hash"}}}}')
    server = start_redirector(HEATMAP_ACCESS_KEY=OPERATOR_KEY)
    assert server.get(tile_url(4400, OPERATOR_KEY)).status_code == 200, 'the operator key works meanwhile'
    assert server.get(tile_url(4400, old)).status_code == 403
    assert server.get(tile_url(4400, '')).status_code == 403, 'a damaged file never opens the server'
    assert 'member keys are refused until keys.json can be read' in server.logs()
    listed = run_cli('keys', 'list', env=redirector_env(strava, data_dir))
    assert listed.returncode == 2 and listed.stderr == f'{data_dir / "keys.json"} is damaged (ValueError): add the ' \
                                                         'members again\n'

    new = add_member(strava, data_dir, 'anna')  # moves the damaged file aside
    server.wait_until(lambda: server.get(tile_url(4400, new)).status_code == 200, timeout=5)
    assert server.get(tile_url(4400, old)).status_code == 403
    assert list(data_dir.glob('keys.json.corrupt-*')) and 'keys.json can be read again' in server.logs()
