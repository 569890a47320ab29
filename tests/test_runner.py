from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port


def healthz(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
        return data


def write_config(tmp_path: Path, demo: Path, port: int) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[storage]\ndb_path = "run.db"\n[feeds]\nopml = "{demo / "demo.opml"}"\n'
        f"[schedule]\ntick_seconds = 1\n[web]\nport = {port}\n"
    )
    return cfg


@pytest.mark.slow
def test_run_polls_serves_and_stops_cleanly(tmp_path: Path, demo_feeds: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, demo_feeds, port)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(cfg)], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=90)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            h = healthz(port)
            if h["items"] == 44:
                break
            time.sleep(0.3)
        assert h["status"] == "ok" and h["feeds"] == 6 and h["items"] == 44
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert "Putin" in r.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0
    with pytest.raises(OSError):
        healthz(port)


@pytest.mark.slow
def test_serve_alone_does_not_poll(tmp_path: Path, demo_feeds: Path) -> None:
    port = free_port()
    cfg = write_config(tmp_path, demo_feeds, port)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config", str(cfg)], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=90)
        time.sleep(2.5)
        assert healthz(port)["feeds"] == 0 and healthz(port)["items"] == 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
