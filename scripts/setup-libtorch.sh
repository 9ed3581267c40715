#!/usr/bin/env bash
# Installs libtorch (from the PyTorch wheel, into a venv outside the repo so clones share it) and
# points `.libtorch` in the repo root at it. Idempotent: does nothing when already set up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${EXPLORE_CACHE:-$HOME/.cache/explore}"
venv="$cache/torch-venv"
torch_version="2.11.0"
torch_dir="$venv/lib/python3.11/site-packages/torch"

if [ ! -f "$torch_dir/lib/libtorch_cpu.so" ] || ! "$venv/bin/python" -c "import torch,sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  echo "==> installing libtorch $torch_version into $venv (about 5 GB; usually 3-10 minutes, the download's speed decides)"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$torch_version" numpy
fi
torch_dir="$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
ln -sfn "$torch_dir" "$root/.libtorch"
echo "==> libtorch: $torch_dir"
