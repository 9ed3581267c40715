#!/usr/bin/env bash
# Installs what explore needs on a Debian machine and is a no-op when it is all there:
# Debian packages (the Fashion-MNIST dataset), the MNIST and scikit-learn digits datasets
# (scripts/setup-data.sh), libtorch (scripts/setup-libtorch.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
start=$SECONDS
echo "==> checking what is installed (a no-op when everything is there: a few seconds)"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]} (usually 1-3 minutes: package lists, then about 30 MB)"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

bash "$root/scripts/setup-data.sh"
bash "$root/scripts/setup-libtorch.sh"
echo "==> set-up done in $((SECONDS - start)) s"
