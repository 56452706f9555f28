"""docs/http-api.md lists every error code the code can answer with, so a reader never meets an unknown one."""

from __future__ import annotations

import importlib
import inspect
import re

from resolver import errors
from tests.support.env import ROOT

MODULES = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
           for p in (ROOT / "resolver").rglob("*.py") if "gunicorn_config" not in p.name]


def codes_in_the_code() -> set[str]:
    classes = {}
    for name in MODULES:
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, errors.ResolverError):
                classes[cls.__name__] = cls
    found = {cls.code for cls in classes.values()}
    for path in (ROOT / "resolver").rglob("*.py"):
        for m in re.finditer(r"(\w+)\((?:[^()]|\([^()]*\))*?code=\"([a-z_]+)\"", path.read_text(), flags=re.S):
            if m.group(1) in classes:
                found.add(m.group(2))
    return found


def test_every_error_code_is_documented():
    doc = (ROOT / "docs" / "http-api.md").read_text()
    documented = set(re.findall(r"`([a-z_]+)`", doc))
    found = codes_in_the_code()
    assert len(found) > 40  # the scan sees the codes at all
    assert sorted(found - documented) == []
