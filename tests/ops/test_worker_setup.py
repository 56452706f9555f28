"""The workers' set-up: per-worker listening sockets (ops/listeners.py, gunicorn_config.reuse_port) only where
the kernel moves a closing listener's queued connections to a sibling, and never for one worker; gc.freeze once
the app is loaded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from resolver.ops.listeners import per_worker


@pytest.mark.parametrize(("content", "workers", "expected"), [
    ("1\n", 2, True), ("1\n", 4, True), ("1\n", 1, False), ("0\n", 2, False), ("", 2, False)])
def test_own_sockets_only_where_the_kernel_migrates_and_more_than_one_worker(tmp_path, content, workers, expected):
    path = tmp_path / "tcp_migrate_req"
    path.write_text(content)
    assert per_worker(workers, str(path)) is expected


def test_no_such_kernel_setting_means_the_shared_socket(tmp_path):
    assert per_worker(2, str(tmp_path / "absent")) is False


@pytest.mark.parametrize("workers", [1, 2])
def test_the_procfile_config_takes_the_rule(workers):
    code = "import resolver.ops.gunicorn_config as c; print(c.reuse_port)"  # in a child: the config patches gevent
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "WEB_CONCURRENCY": str(workers)},
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == str(per_worker(workers))


def test_a_worker_freezes_what_the_app_loaded():
    """post_worker_init: the cyclic GC stops walking the loaded app (gc.freeze), in a child (the config patches
    gevent)."""
    code = ("import gc, resolver.ops.gunicorn_config as c; before = gc.get_freeze_count(); "
            "c.post_worker_init(None); print(before == 0, gc.get_freeze_count() > 1000)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True"]
