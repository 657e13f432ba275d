"""The deployment: the server's own install, the systemd unit verifies, the Docker image builds where Docker runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, cookie_export, free_port, redirector_env


def test_systemd_unit_verifies(tmp_path):
    assert shutil.which('systemd-analyze'), "systemd-analyze is missing: install Debian's systemd (.ci/run does)"
    unit = (ROOT / 'deploy' / 'strava-heatmap.service').read_text()
    # verify wants ExecStart to exist: point it at this checkout instead of /opt/strava-heatmap
    local = unit.replace('/opt/strava-heatmap/.venv/bin/python', shutil.which('python3')).replace('/opt/strava-heatmap',
                                                                                                   str(ROOT))

    def verify(text: str) -> subprocess.CompletedProcess:
        (tmp_path / 'strava-heatmap.service').write_text(text)
        return subprocess.run(['systemd-analyze', 'verify', str(tmp_path / 'strava-heatmap.service')],
                              capture_output=True, text=True, timeout=60)

    done = verify(local)
    assert done.returncode == 0 and done.stderr.strip() == '', done.stderr
    for hardening in ('NoNewPrivileges=yes', 'ProtectSystem=strict', 'User=strava-heatmap', 'UMask=0077'):
        assert hardening in unit
    misspelt = verify(local.replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes'))
    assert 'NoNewPrivilege' in misspelt.stderr, 'verify reads the unit: a misspelt setting is reported'


def test_docker_image_builds():
    if shutil.which('docker') is None:
        pytest.skip('docker is not installed here')
    if subprocess.run(['docker', 'info'], capture_output=True, timeout=30).returncode != 0:
        pytest.skip('no Docker engine runs here (only the client is installed)')
    done = subprocess.run(['docker', 'build', '-q', '-t', 'strava-heatmap-test', str(ROOT)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr


def test_the_readme_server_install_runs_the_server_and_names_the_login_stack_it_leaves_out(strava, tmp_path):
    """The server's own install (requirements.txt, the README's first command) holds everything the server needs,
    stays lean, and a login on this machine without its browser stack says the one command that installs it."""
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / 'bin' / 'pip'), 'install', '-q', '-r', str(ROOT / 'requirements.txt')],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    size = sum(path.stat().st_size for path in venv.rglob('*') if path.is_file() and not path.is_symlink())
    assert size < 200e6, f'the server install takes {size / 1e6:.0f} MB'
    python = str(venv / 'bin' / 'python')
    env = redirector_env(strava, tmp_path / 'data')
    imported = subprocess.run([python, 'redirector.py', 'import-cookies', '-'], cwd=ROOT, env=env, text=True,
                              input=cookie_export(strava), capture_output=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    doctor = subprocess.run([python, 'redirector.py', 'doctor'], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**env, 'HEATMAP_AUTH': 'local', 'STRAVA_EMAIL': 'a@b.c', 'STRAVA_PASSWORD': 'p'})
    install = f'`{python} -m pip install -r {ROOT / "actor" / "requirements.txt"}`'
    assert f'FAIL  browser for the local login: a login on this machine needs playwright and apify, which the ' \
           f"server's install leaves out: run {install}" in doctor.stdout, doctor.stdout + doctor.stderr
    assert doctor.stdout.count('\nok    ') >= 4, 'the other steps work with the server install alone'
    port = free_port()
    local = subprocess.run([python, 'redirector.py', '--port', str(port)], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env={**env, 'HEATMAP_AUTH': 'local', 'STRAVA_EMAIL': 'a@b.c',
                                            'STRAVA_PASSWORD': 'p'})
    assert local.returncode == 2 and local.stderr.startswith('HEATMAP_AUTH=local: a login on this machine needs')
    assert local.stderr.count('\n') == 1 and install in local.stderr
    server = subprocess.Popen([python, 'redirector.py', '--port', str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f'http://127.0.0.1:{port}/healthz', timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and server.poll() is None, 'the server did not start'
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()['ok'] is True
        deep = requests.get(f'http://127.0.0.1:{port}/tiles/all/hot/17/70404/43000.png?px=256', timeout=30)
        assert deep.status_code == 200, 'overzoom (Pillow) is in the install'
        page = requests.get(f'http://127.0.0.1:{port}/packs/', timeout=30)
        assert page.status_code == 200 and 'Offline packs' in page.text, 'packs (shapely, numpy) are in the install'
    finally:
        server.terminate()
        server.wait(10)


def test_an_interpreter_without_the_servers_install_gets_the_one_line_that_installs_it(tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True, timeout=120)
    for command in ((), ('doctor',), ('import-cookies', '-')):
        done = subprocess.run([str(venv / 'bin' / 'python'), 'redirector.py', *command], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 1 and done.stdout == ''
        assert done.stderr == (f"bottle is not installed for {venv / 'bin' / 'python'}: install what this version "
                               f"needs: {venv / 'bin' / 'python'} -m pip install -q -r {ROOT / 'requirements.txt'}\n")
