"""The command line: misconfiguration gets one line naming the variable; the server explains itself."""

from __future__ import annotations

import pytest

from tests.conftest import redirector_env, run_cli


@pytest.mark.parametrize('settings, named', [
    ({'HEATMAP_AUTH': 'apify', 'STRAVA_EMAIL': 'a@b.c', 'STRAVA_PASSWORD': 'p'}, 'APIFY_TOKEN'),
    ({'HEATMAP_AUTH': 'apify', 'APIFY_TOKEN': 't', 'STRAVA_EMAIL': 'a@b.c', 'STRAVA_PASSWORD': 'p'}, 'APIFY_ACTOR'),
    ({'HEATMAP_AUTH': 'local', 'STRAVA_EMAIL': 'a@b.c'}, 'STRAVA_PASSWORD'),
    ({'HEATMAP_AUTH': 'local', 'STRAVA_PASSWORD': 'p'}, 'STRAVA_EMAIL'),
    ({'HEATMAP_MODE': 'mirror'}, 'HEATMAP_MODE'),
    ({'STRAVA_TILE_URL': 'content-a.strava.com/{z}/{x}/{y}'}, 'STRAVA_TILE_URL'),
    ({'STRAVA_TILE_URL': 'https://h/{z}/{x}.png'}, 'STRAVA_TILE_URL'),
    ({'HEATMAP_PORT': 'eighty'}, 'HEATMAP_PORT'),
    ({'STRAVA_PASSWORD_FILE': '/nonexistent/secret', 'HEATMAP_AUTH': 'local', 'STRAVA_EMAIL': 'a@b.c'},
     'STRAVA_PASSWORD_FILE'),
])
def test_misconfiguration_gets_one_line_naming_the_variable(strava, tmp_path, settings, named):
    done = run_cli('status', env=redirector_env(strava, tmp_path / 'data', **settings))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], done.stderr


def test_unwritable_data_dir_is_named(strava, tmp_path):
    blocked = tmp_path / 'file'
    blocked.write_text('')
    done = run_cli('status', env=redirector_env(strava, blocked / 'data'))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and 'HEATMAP_DATA_DIR' in done.stderr


def test_password_file_is_read(strava, tmp_path, chromium):
    secret = tmp_path / 'password'
    secret.write_text('wrong horse\n')
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_AUTH='local', STRAVA_EMAIL='rider@example.com',
                         STRAVA_PASSWORD_FILE=secret, CHROMIUM_PATH=chromium)
    done = run_cli('login', env=env)
    assert 'bad_credentials' in done.stderr
    assert 'wrong horse' not in done.stderr + done.stdout


def test_flags_override_the_environment(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_MODE='mirror')
    assert run_cli('status', '--mode', 'proxy', env=env).returncode == 1  # runs: no cookies yet


def test_readme_documents_every_setting():
    from heatmap.settings import SETTINGS
    from tests.conftest import ROOT
    readme = (ROOT / 'README.md').read_text()
    missing = [variable for variable, *_ in SETTINGS if f'| `{variable}` |' not in readme]
    assert not missing, f'settings missing from the README table: {missing}'


def test_server_explains_itself_without_credentials(start_redirector):
    server = start_redirector(HEATMAP_AUTH='auto')
    page = server.get('/').text
    assert 'Getting cookies' in page and 'STRAVA_EMAIL' in page
    assert 'serving on http://127.0.0.1' in server.logs()
