#!/usr/bin/env bash
# Plots of the committed benchmark results (S3, S5, S2, S4) for BENCHMARKS.md, drawn by
# bench/plots.py from the jsonl files in bench/objectives/results/ and bench/transfer/results/
# (no training is run). Creates the Python environment bench/.venv on first use, as
# bench/search.sh does, and installs matplotlib into it when it is missing.
#
#   bash bench/plots.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONDONTWRITEBYTECODE=1

venv="$root/bench/.venv"
if ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  echo "==> installing matplotlib into $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet matplotlib
fi
exec "$venv/bin/python" bench/plots.py "$@"
