"""Build the small test models into the cache before the tests run (``make test`` does, before the fast tier):
``python -m tests.build_models``. A second run with unchanged code finds them and returns at once."""

from __future__ import annotations

import time

from tests.conftest import cached_small_models

if __name__ == "__main__":
    started = time.monotonic()
    models = cached_small_models()
    print(f"test models ready in {time.monotonic() - started:.1f} s: {models.work}")
