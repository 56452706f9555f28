"""SECURITY.md maps every requirement to tests by `tests/FILE.py::test_name`: each one named must exist."""

from __future__ import annotations

import ast
import re

from tests.support.env import ROOT

NAMED = re.compile(r"(tests/(?:[a-z]+/)?test_[a-z0-9_]+\.py)::(test_[a-z0-9_]+)")


def test_every_test_named_in_security_md_exists():
    text = (ROOT / "SECURITY.md").read_text()
    named = set(NAMED.findall(text))
    assert len(named) >= 40  # the mapping is there at all
    missing = []
    for path, name in sorted(named):
        file = ROOT / path
        tree = ast.parse(file.read_text()) if file.is_file() else ast.Module(body=[], type_ignores=[])
        if name not in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
            missing.append(f"{path}::{name}")
    assert not missing, missing


def test_every_link_in_security_md_points_at_the_file_it_names():
    text = (ROOT / "SECURITY.md").read_text()
    linked = r"\[`(tests/(?:[a-z]+/)?[a-z0-9_]+\.py)::(test_[a-z0-9_]+)`\]\(([^)]+)\)"
    for label_path, _name, target in re.findall(linked, text):
        assert target == label_path, (label_path, target)
