"""The command line: every mistake is one line naming what to change; each command has its own help."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cookie_export, redirector_env, run_cli
from tests.test_tiles import import_cookies


def one_line_error(done: subprocess.CompletedProcess, *named: str) -> str:
    assert done.returncode != 0, done.stdout
    assert 'Traceback' not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize('settings, named', [
    ({'HEATMAP_MODE': 'mirror'}, 'HEATMAP_MODE'),
    ({'STRAVA_TILE_URL': 'content-a.strava.com/{z}/{x}/{y}'}, 'STRAVA_TILE_URL'),
    ({'STRAVA_TILE_URL': 'https://h/{z}/{x}.png'}, 'STRAVA_TILE_URL'),
    ({'HEATMAP_PORT': 'eighty'}, 'HEATMAP_PORT'),
    ({'HEATMAP_PORT': '70000'}, 'HEATMAP_PORT must be between 1 and 65535'),
    ({'HEATMAP_THREADS': '0'}, 'HEATMAP_THREADS must be between 1'),
    ({'HEATMAP_PUBLIC_URL': 'https://'}, 'HEATMAP_PUBLIC_URL must look like https://host'),
    ({'HEATMAP_PUBLIC_URL': 'http:heat.example.org'}, 'HEATMAP_PUBLIC_URL must look like https://host'),
    ({'HEATMAP_BACKOFF_MIN': '600', 'HEATMAP_BACKOFF_MAX': '60'}, 'HEATMAP_BACKOFF_MAX must be at least 600'),
    ({'CHROMIUM_PATH': '/nonexistent/chromium'}, 'CHROMIUM_PATH /nonexistent/chromium is not an executable'),
    ({'STRAVA_PASSWORD_FILE': '/nonexistent/secret', 'STRAVA_EMAIL': 'a@b.c'}, 'STRAVA_PASSWORD_FILE'),
    ({'STRAVA_IMAP_URL': 'imap.gmail.com'}, 'STRAVA_IMAP_URL must look like imaps://USER@HOST[:PORT][/MAILBOX]'),
    ({'STRAVA_IMAP_URL': 'imap://me@imap.gmail.com'}, 'STRAVA_IMAP_URL: imap:// sends the password unencrypted'),
    ({'STRAVA_IMAP_WAIT': '0'}, 'STRAVA_IMAP_WAIT must be between 1 and 600'),
    ({'HEATMAP_REFRESH_POLL': '0'}, 'HEATMAP_REFRESH_POLL must be between 0.05 and 60, not 0'),
])
def test_misconfiguration_gets_one_line_naming_the_variable(strava, tmp_path, settings, named):
    done = run_cli('serve', env=redirector_env(strava, tmp_path / 'data', **settings))
    assert done.returncode == 2
    one_line_error(done, named)


@pytest.mark.parametrize('settings, missing', [
    ({'HEATMAP_AUTH': 'apify', 'STRAVA_EMAIL': 'a@b.c'}, 'missing: APIFY_TOKEN, APIFY_ACTOR, STRAVA_PASSWORD'),
    ({'HEATMAP_AUTH': 'auto', 'APIFY_TOKEN': 't'}, 'missing: APIFY_ACTOR, STRAVA_EMAIL, STRAVA_PASSWORD'),
    ({'HEATMAP_AUTH': 'auto', 'STRAVA_EMAIL': 'a@b.c'}, 'missing: STRAVA_PASSWORD'),
    ({'HEATMAP_AUTH': 'local', 'STRAVA_PASSWORD': 'p'}, 'missing: STRAVA_EMAIL'),
    ({'HEATMAP_AUTH': 'auto', 'STRAVA_EMAIL': 'a@b.c'}, 'can have STRAVA_IMAP_URL and STRAVA_IMAP_PASSWORD instead'),
    ({'HEATMAP_AUTH': 'local', 'STRAVA_EMAIL': 'a@b.c', 'STRAVA_IMAP_URL': 'imaps://a@imap.b.c'},
     'which needs STRAVA_EMAIL, STRAVA_IMAP_URL, STRAVA_IMAP_PASSWORD; missing: STRAVA_IMAP_PASSWORD'),
    ({'HEATMAP_AUTH': 'auto', 'STRAVA_IMAP_PASSWORD': 'p'}, 'missing: STRAVA_EMAIL, STRAVA_IMAP_URL'),
])
def test_half_configured_login_names_every_missing_variable_at_start(strava, tmp_path, settings, missing):
    env = redirector_env(strava, tmp_path / 'data', **settings)
    for command in ('serve', 'login', 'doctor'):
        line = one_line_error(run_cli(command, env=env), missing)
        assert 'p' not in line.split('missing:')[0].split() and 'a@b.c' not in line, 'never a value'


def test_a_mailbox_instead_of_a_password_is_a_whole_login():
    from heatmap import cli
    from heatmap import settings as config

    args = cli.parser().parse_args(['serve'])
    environ = {'STRAVA_EMAIL': 'a@b.c', 'STRAVA_IMAP_URL': 'imaps://a%40b.c@imap.b.c/Strava',
               'STRAVA_IMAP_PASSWORD': 'p'}
    settings = config.load(args, environ)
    config.check_login(settings)
    assert settings.login_source == 'local' and settings.imap_wait == 120
    [account] = settings.accounts
    assert (account.password, account.imap_url, account.imap_password) == ('', environ['STRAVA_IMAP_URL'], 'p')


@pytest.mark.parametrize('variable', ['STRAVA_IMAP_PASSWORD_FILE', 'STRAVA_PASSWORD_FILE', 'APIFY_TOKEN_FILE'])
def test_a_secret_file_others_can_read_is_refused_like_the_accounts_file(strava, tmp_path, variable):
    secret = tmp_path / 'secret'
    secret.write_text('secret-in-a-loose-file\n')
    secret.chmod(0o644)
    env = redirector_env(strava, tmp_path / 'data', **{variable: secret})
    line = one_line_error(run_cli('serve', env=env), f'{variable} names {secret}, which others can read (mode 644)',
                          f'chmod 600 {secret}')
    assert 'secret-in-a-loose-file' not in line


def test_errors_name_the_flag_the_user_gave(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data')
    one_line_error(run_cli('serve', '--port', '99999', env=env), '--port must be between 1 and 65535')
    one_line_error(run_cli('serve', '--auth', 'apify', '--apify-token', 't', env=env), '--auth=apify',
                   'missing: APIFY_ACTOR')
    env['HEATMAP_LOG_LEVEL'] = 'LOUD'
    assert run_cli('status', '--log-level', 'INFO', env=env).returncode == 1, 'the flag wins: runs, no cookies yet'


def test_port_in_use_is_one_line(strava, tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli('serve', env=redirector_env(strava, tmp_path / 'data', HEATMAP_PORT=port))
    line = one_line_error(done, f'port {port}', 'already in use', 'HEATMAP_PORT')
    assert 'serving on' not in done.stdout + done.stderr and line


@pytest.mark.parametrize('host, named', [('bogus.invalid', 'is not a known address'),
                                         ('192.0.2.1', 'is not an address of this machine')])
def test_host_that_is_not_here_is_one_line(strava, tmp_path, host, named):
    done = run_cli('serve', env=redirector_env(strava, tmp_path / 'data', HEATMAP_HOST=host))
    one_line_error(done, 'HEATMAP_HOST', named)


def test_each_command_has_its_own_short_help():
    helps = {}
    for command in ('serve', 'login', 'import-cookies', 'status', 'doctor', 'pair', 'presets', 'pack'):
        done = subprocess.run([sys.executable, 'redirector.py', command, '--help'], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0
        helps[command] = done.stdout
    assert len(set(helps.values())) == len(helps)
    assert '--data-dir' in helps['status'] and '--port' not in helps['status']
    assert '--public-url' in helps['presets'] and '--out' in helps['presets']
    assert '--strava-email' not in helps['presets']
    assert '--chromium-path' in helps['login'] and '--chromium-path' in helps['serve']
    assert len(helps['status'].splitlines()) < 40, 'the data and the accounts it lists, nothing more'
    assert '--strava-accounts-file' in helps['status'] and '--apify-token' not in helps['status']


def test_version_and_unknown_arguments(strava, tmp_path):
    from heatmap import __version__
    version = subprocess.run([sys.executable, 'redirector.py', '--version'], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert version.returncode == 0 and __version__ in version.stdout
    extra = run_cli('status', 'bogus', env=redirector_env(strava, tmp_path / 'data'))
    assert extra.returncode == 2 and 'unrecognized arguments: bogus' in extra.stderr


@pytest.mark.parametrize('args, line', [
    (('status', '--bogus'), 'redirector.py status: unrecognized arguments: --bogus (see redirector.py status --help)'),
    (('pack', '--layer'),
     'redirector.py pack: argument --layer: expected one argument (see redirector.py pack --help)'),
    (('pack', '--layer', 'ride/hot', '--bbox', '7,46,7.1,46.1', '--zooms', '-1-3', '--dry-run'),
     "zooms '-1-3': give MIN-MAX with zooms from 0 to 18, e.g. 10-15"),
    (('import-cookies',), 'redirector.py import-cookies: the following arguments are required: FILE '
                          '(see redirector.py import-cookies --help)'),
    (('frobnicate',), "redirector.py: argument COMMAND: invalid choice: 'frobnicate'"),
], ids=['unknown_flag', 'missing_value', 'negative_zoom', 'missing_file', 'unknown_verb'])
def test_every_mistake_is_one_line_about_its_command(strava, tmp_path, args, line):
    done = run_cli(*args, env=redirector_env(strava, tmp_path / 'data'))
    assert done.returncode == 2
    assert one_line_error(done).startswith(line)


def test_each_command_takes_the_flags_of_the_settings_it_reads(strava, tmp_path):
    accounts = tmp_path / 'accounts.txt'
    accounts.write_text('club@example.com pass word\n')
    accounts.chmod(0o600)
    import_cookies(strava, tmp_path / 'data')
    done = run_cli('status', '--strava-accounts-file', str(accounts), env=redirector_env(strava, tmp_path / 'data'))
    assert done.returncode == 0, done.stderr
    assert 'account c***@example.com: ready' in done.stdout
    presets = run_cli('presets', '--out', str(tmp_path / 'presets'), '--public-url', 'https://maps.example.org',
                      '--data-dir', str(tmp_path / 'data'), '--max-zoom', '16',
                      env=redirector_env(strava, tmp_path / 'x'))
    assert presets.returncode == 0, presets.stderr
    assert 'personal' in ' '.join(presets.stdout.splitlines()), 'the athlete was found in --data-dir'


def test_a_closed_pipe_ends_a_command_quietly_and_a_pack_still_writes_its_file(strava, tmp_path):
    import_cookies(strava, tmp_path / 'data')
    env = redirector_env(strava, tmp_path / 'data')
    doctor = subprocess.run(f'{sys.executable} redirector.py doctor | head -1', shell=True, cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert doctor.stderr == '' and doctor.stdout.startswith('ok    cookies.json usable')
    out = tmp_path / 'bern.mbtiles'
    pack = subprocess.run(f'{sys.executable} redirector.py pack --layer ride/hot --bbox 7.40,46.90,7.50,46.96 '
                          f'--zooms 11-12 --out {out} 2>&1 | head -1', shell=True, cwd=ROOT,
                          env={**env, 'HEATMAP_PACK_RATE': '50'}, capture_output=True, text=True, timeout=60)
    assert pack.stderr == '' and pack.stdout.startswith('estimate: 6 tiles')
    assert out.exists(), 'the pack went on after its reader had gone'


def test_status_changes_nothing(strava, tmp_path):
    data_dir = tmp_path / 'data'
    data_dir.mkdir(mode=0o755)
    damaged = '{"state": {"1": {"cookies": [{"name": "_strava4_sess'
    (data_dir / 'cookies.json').write_text(damaged)
    leftover = data_dir / '.cookies.json.999999999.1.tmp'
    leftover.write_text('{}')
    before = sorted((p.name, p.stat().st_mtime_ns) for p in data_dir.iterdir())

    done = run_cli('status', env=redirector_env(strava, data_dir))
    assert done.returncode == 1 and 'damaged' in done.stdout and 'Traceback' not in done.stdout + done.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in data_dir.iterdir()) == before
    assert (data_dir / 'cookies.json').read_text() == damaged
    assert oct(data_dir.stat().st_mode & 0o777) == '0o755'

    missing = run_cli('status', env=redirector_env(strava, tmp_path / 'nowhere'))
    assert missing.returncode == 1 and 'does not exist' in missing.stdout
    assert not (tmp_path / 'nowhere').exists()


def test_writing_commands_name_a_data_dir_they_cannot_use(strava, tmp_path):
    blocked = tmp_path / 'file'
    blocked.write_text('')
    done = run_cli('import-cookies', '-', env=redirector_env(strava, blocked / 'data'), stdin=cookie_export(strava))
    one_line_error(done, 'HEATMAP_DATA_DIR', 'cannot be created')
    for command in (('import-cookies', '-'), ('status',), ('serve',)):
        done = run_cli(*command, env=redirector_env(strava, blocked), stdin=cookie_export(strava))
        assert one_line_error(done) == f'configuration: HEATMAP_DATA_DIR {blocked} is a file, not a folder: set it ' \
                                       'to a folder for cookies.json and the tile cache (e.g. ./data)'


def test_login_command_uses_the_configured_login_and_says_what_it_did(strava, chromium, tmp_path):
    from tests.conftest import PASSWORD
    data_dir = tmp_path / 'data'
    run_cli('import-cookies', '-', env=redirector_env(strava, data_dir), stdin=cookie_export(strava))
    env = redirector_env(strava, data_dir, HEATMAP_AUTH='local', STRAVA_EMAIL='rider@example.com',
                         STRAVA_PASSWORD=PASSWORD, CHROMIUM_PATH=chromium)
    done = run_cli('login', env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('logged in with local (r***@example.com): ') and 'tile cookies expire' in done.stdout
    assert strava.counters['login_ok'] == 1, 'a login, although the session could have been used'
    assert 'next try' not in done.stdout + done.stderr

    session_only = run_cli('login', env=redirector_env(strava, data_dir, HEATMAP_AUTH='session'))
    assert session_only.returncode == 0 and 'renewed from the stored session cookie' in session_only.stdout


def test_doctor_checks_the_browser_of_the_local_login(strava, chromium, tmp_path):
    from tests.test_tiles import import_cookies
    import_cookies(strava, tmp_path / 'data')
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_AUTH='local', STRAVA_EMAIL='a@b.c', STRAVA_PASSWORD='p',
                         CHROMIUM_PATH=chromium)
    done = run_cli('doctor', env=env)
    assert 'ok    browser for the local login: Chromium' in done.stdout, done.stdout
    assert done.returncode == 0

    fake_browser = tmp_path / 'chromium'
    fake_browser.write_text('#!/bin/sh\nexit 1\n')
    fake_browser.chmod(0o755)
    env['CHROMIUM_PATH'] = str(fake_browser)
    broken = run_cli('doctor', env=env)
    assert broken.returncode == 1 and 'FAIL  browser for the local login: Chromium' in broken.stdout
    assert 'does not start' in broken.stdout


def test_presets_out_mistakes_are_one_line_and_files_are_private(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_ACCESS_KEY='key-in-every-preset')
    existing = tmp_path / 'a-file'
    existing.write_text('')
    one_line_error(run_cli('presets', '--out', str(existing), '--public-url', 'https://maps.example.org', env=env),
                   '--out', 'is a file')
    one_line_error(run_cli('presets', '--out', str(existing / 'sub'), '--public-url', 'https://maps.example.org',
                           env=env), 'cannot write the presets')
    one_line_error(run_cli('presets', '--out', str(tmp_path / 'p'), env=env), '--public-url')

    out = tmp_path / 'presets'
    done = run_cli('presets', '--out', str(out), '--public-url', 'https://maps.example.org', env=env)
    assert done.returncode == 0, done.stderr
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in out.iterdir()}
    assert set(modes.values()) == {'0o600'}, modes


def test_readme_documents_every_setting():
    from heatmap.settings import SETTINGS
    readme = (ROOT / 'README.md').read_text()
    missing = [variable for variable, *_ in SETTINGS if f'| `{variable}` |' not in readme]
    assert not missing, f'settings missing from the README table: {missing}'


def test_server_explains_itself_without_credentials(start_redirector):
    server = start_redirector(HEATMAP_AUTH='auto')
    page = server.get('/').text
    assert 'Getting cookies' in page and 'STRAVA_EMAIL' in page
    assert 'serving on http://127.0.0.1' in server.logs()


def test_password_file_is_read(strava, tmp_path, chromium):
    secret = tmp_path / 'password'
    secret.write_text('wrong horse\n')
    secret.chmod(0o600)
    env = redirector_env(strava, tmp_path / 'data', HEATMAP_AUTH='local', STRAVA_EMAIL='rider@example.com',
                         STRAVA_PASSWORD_FILE=secret, CHROMIUM_PATH=chromium)
    done = run_cli('login', env=env)
    assert 'bad_credentials' in done.stderr
    assert 'wrong horse' not in done.stderr + done.stdout


def test_import_older_than_the_stored_cookies_keeps_the_newer_unless_forced(strava, tmp_path):
    env = redirector_env(strava, tmp_path / 'data')
    assert run_cli('import-cookies', '-', env=env, stdin=cookie_export(strava, 7200)).returncode == 0
    older = cookie_export(strava, 3600)
    refused = run_cli('import-cookies', '-', env=env, stdin=older)
    assert refused.returncode == 1 and 'newer' in refused.stderr and '--force' in refused.stderr
    stored = json.loads((tmp_path / 'data' / 'cookies.json').read_text())['state']['1']
    assert stored['expires_at'] > stored['refreshed_at'] + 7000
    assert run_cli('import-cookies', '-', '--force', env=env, stdin=older).returncode == 0


def test_cookie_value_a_header_cannot_carry_is_refused_at_import(strava, tmp_path):
    export = json.loads(cookie_export(strava))
    export[0]['value'] = 'caf\u00e9-' + export[0]['value']
    done = run_cli('import-cookies', '-', env=redirector_env(strava, tmp_path / 'data'), stdin=json.dumps(export))
    line = one_line_error(done, 'characters a Cookie header cannot carry', export[0]['name'])
    assert export[0]['value'] not in line
    assert not (tmp_path / 'data' / 'cookies.json').exists()


def test_os_environment_is_not_needed_for_help():
    env = {'PATH': os.environ['PATH']}
    done = subprocess.run([sys.executable, 'redirector.py', '--help'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and 'import-cookies' in done.stdout
