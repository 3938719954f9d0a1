#!/usr/bin/env bash
# Installs what fmnist_jax needs on a fresh Debian/Ubuntu machine: the real Fashion-MNIST (Debian
# package dataset-fashion-mnist) and the Python package with its test extras, into the project's
# virtual environment `.venv` (so a stock Debian/Ubuntu Python, which refuses pip installs under
# PEP 668, works too). With a virtual environment already active, it installs there and `.venv`
# points to it. Afterwards: `.venv/bin/fmnist-jax ...`, `.venv/bin/python -m pytest`.
# PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "$@" || { $SUDO apt-get update -q && $SUDO apt-get install -y -q "$@"; }
}
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || apt_install dataset-fashion-mnist
if [ -n "${VIRTUAL_ENV:-}" ]; then
  [ "$(realpath -m .venv)" = "$(realpath -m "$VIRTUAL_ENV")" ] || ln -sfn "$VIRTUAL_ENV" .venv
elif [ ! -x .venv/bin/python ]; then
  PY=${PYTHON:-python3}
  "$PY" -m venv .venv 2>/dev/null || { rm -rf .venv; apt_install python3-venv && "$PY" -m venv .venv; }
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "set up: .venv/bin/fmnist-jax, .venv/bin/python -m pytest ($(.venv/bin/python --version))"
