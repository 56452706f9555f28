"""The Procfile's gunicorn settings with some of resolver/policy.py's stream constants shortened, for tests that
would otherwise wait out production timings (a 30 s send idle timeout, a 2 s revocation re-check).

`RESOLVER_TEST_POLICY` is a JSON object of policy names and values, set in the master before the workers fork
and import the app; everything else is `resolver.ops.gunicorn_config` itself. Use it through
`start_gunicorn(env, tmp_path, config_module="tests.support.gunicorn_policy")`.
"""

from __future__ import annotations

import importlib
import json
import os

from resolver.ops.gunicorn_config import *  # noqa: F403 - every setting and hook of the Procfile's config

policy = importlib.import_module("resolver.policy")  # after the config: gevent patches first

for _name, _value in json.loads(os.environ.get("RESOLVER_TEST_POLICY", "{}")).items():
    if not hasattr(policy, _name):
        raise SystemExit(f"RESOLVER_TEST_POLICY: policy has no {_name}")
    setattr(policy, _name, _value)
