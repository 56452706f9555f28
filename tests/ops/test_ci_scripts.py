"""The scripts CI and the bench run outside pytest still work with today's code (they broke once, silently)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.env import ROOT, process_env


def test_ci_smoke_script_serves_a_grant_through_the_procfile(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / ".ci" / "smoke.py")], cwd=tmp_path, env=process_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("smoke: ok:")


def test_bench_fake_iam_starts_and_answers(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tok-1": "supervisor-1"}))
    proc = subprocess.Popen([sys.executable, "-m", "bench.fake_iam", "--account-sid", "AC" + "1" * 32,
                             "--auth-token", "t" * 32, "--tokens", str(tokens)], cwd=ROOT, env=process_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("PORT "), line + (proc.stdout.read() if proc.poll() is not None else "")  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.communicate(timeout=10)  # also closes the pipe
