"""`resolver demo` as a user runs it, and the wall between the demo and the service."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
CLI = "from resolver.cli import main; main()"


def test_demo_command_serves_everything_on_loopback_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "demo", "--port", "0", "--page-port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl+C" in line:
                break
        banner = "".join(lines)
        assert "127.0.0.1 only" in banner
        urls = re.findall(r"http://[^\s]+", banner)
        assert len(urls) == 4 and all(u.startswith("http://127.0.0.1:") for u in urls), banner
        page, resolver = urls[0], urls[1]
        assert "Conversations (demo)" in requests.get(page, timeout=5).text
        assert requests.get(f"{resolver}/healthz", timeout=5).json() == {"status": "ok"}
        js = requests.get(f"{resolver}/static/flex-drilldown.js", timeout=5)
        assert js.ok and "export function installDrilldownHandler" in js.text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert "stopping" in out


def test_the_service_never_loads_the_demo() -> None:
    code = (
        "import sys; from resolver import create_app; import resolver.cli, resolver.ops.gunicorn_config; "
        "print(sorted(m for m in sys.modules if m.startswith('resolver.demo')))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
