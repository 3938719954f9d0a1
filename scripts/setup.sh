#!/usr/bin/env bash
# Installs what fmnist_jax needs on a fresh Debian/Ubuntu machine: the real Fashion-MNIST
# (Debian package dataset-fashion-mnist) and the Python package with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q dataset-fashion-mnist || { $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist; }
fi
python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
