#!/bin/sh
# Regenerates deploy/requirements.lock, the pinned and hashed dependencies the image installs
# (pyproject.toml's worker and monitor extras, and setuptools to build the project). Run it from
# a venv with the dev extra (pip-tools), under the image's Python (3.11), after changing a
# dependency; tests/deploy checks that the lock covers pyproject.toml.
set -eu
cd "$(dirname "$0")/.."
CUSTOM_COMPILE_COMMAND="deploy/lock.sh" pip-compile --quiet --upgrade \
    --extra worker --extra monitor --all-build-deps --allow-unsafe --unsafe-package billing-worker \
    --generate-hashes --strip-extras \
    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
    --output-file deploy/requirements.lock pyproject.toml
# The monitor extra names the project itself, which pip-compile then lists by its local path:
# the image installs the project separately (--no-deps), so that entry goes.
python3 - <<'PY'
from pathlib import Path

lock = Path("deploy/requirements.lock")
text = lock.read_text()
cut = text.index("# The following packages are considered to be unsafe")
rest = [line for line in text[cut:].splitlines()[1:] if line.strip()]
if any(not line.lstrip().startswith(("billing-worker @", "# via")) for line in rest):
    raise SystemExit(f"lock.sh: unexpected entries after the unsafe marker: {rest}")
lock.write_text(text[:cut].rstrip("\n") + "\n")
PY
