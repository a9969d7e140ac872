#!/bin/sh
# Install chatgate for production: a virtual environment at VENV with chatgate from this checkout
# (no test extras, not editable) and exactly the versions CI tests (constraints.txt).
#
#     deploy/install.sh VENV          e.g.  deploy/install.sh /opt/chatgate/venv
#
# The Dockerfile, the README's systemd walkthrough and tests/test_install.py all install with this
# script, so what runs in production is what the install test started. Re-run it after pulling a
# new version: it updates the environment in place. PYTHON picks the interpreter (default python3,
# 3.11 or newer).
set -eu
if [ "$#" -ne 1 ]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
src=$(cd "$(dirname "$0")/.." && pwd)
venv=$1
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade --disable-pip-version-check --progress-bar off \
    -c "$src/constraints.txt" "$src"
echo "installed $("$venv/bin/chatgate" --version) into $venv"
