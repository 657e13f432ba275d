"""The deployment files: the systemd unit verifies, the Docker image builds where Docker runs."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def test_systemd_unit_verifies(tmp_path):
    if shutil.which('systemd-analyze') is None:
        pytest.skip('systemd-analyze is not installed here')
    unit = (ROOT / 'deploy' / 'strava-heatmap.service').read_text()
    # verify wants ExecStart to exist: point it at this checkout instead of /opt/strava-heatmap
    local = tmp_path / 'strava-heatmap.service'
    local.write_text(unit.replace('/opt/strava-heatmap/.venv/bin/python', shutil.which('python3'))
                     .replace('/opt/strava-heatmap', str(ROOT)))
    done = subprocess.run(['systemd-analyze', 'verify', str(local)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr.strip() == '', done.stderr
    for hardening in ('NoNewPrivileges=yes', 'ProtectSystem=strict', 'User=strava-heatmap', 'UMask=0077'):
        assert hardening in unit


def test_docker_image_builds():
    if shutil.which('docker') is None:
        pytest.skip('docker is not installed here')
    if subprocess.run(['docker', 'info'], capture_output=True, timeout=30).returncode != 0:
        pytest.skip('no Docker engine runs here (only the client is installed)')
    done = subprocess.run(['docker', 'build', '-q', '-t', 'strava-heatmap-test', str(ROOT)], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
