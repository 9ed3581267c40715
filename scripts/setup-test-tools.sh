#!/usr/bin/env bash
# Installs the tools that only the test suite needs, and is a no-op when they are all there:
#   - Debian's `chromium` and `chromium-driver` (the dashboard's browser test,
#     tests/tests/e2e_dashboard.rs drives them through tests/browser/check_dashboard.py);
#   - Debian's `prometheus` (its `promtool check metrics` checks the master's /metrics);
#   - Debian's `postgresql` (the server binaries under /usr/lib/postgresql/<version>/bin; about
#     45 MB with its LLVM library, 20-40 s): scripts/pg-test-cluster.sh runs a private, throwaway
#     cluster from them for the PostgreSQL store's tests (the package's own cluster, which it may
#     start on port 5432, is not used);
#   - a Python venv at ~/.cache/explore/test-venv (or $EXPLORE_CACHE/test-venv) with Selenium,
#     pinned below; the browser test runs its script with this venv's python;
#   - for deploy/check.sh (the Kubernetes manifests): `kubectl kustomize` (Debian's
#     `kubernetes-client`, unless a kubectl is already there), kubernetes-validate (pinned, in the
#     test venv) and checkov (pinned, in its own venv ~/.cache/explore/checkov-venv: it pins many
#     libraries of its own). First install about 40 s;
#   - moto's S3-compatible server (pinned, in its own venv ~/.cache/explore/s3-venv) for the
#     object-storage test (tests/tests/e2e_object_storage.rs, through tests/src/s3.rs).
# A first run usually takes 30 s to 2 minutes (about 350 MB of Debian packages, then a few seconds
# for the venv); later runs take well under a second.
set -euo pipefail

SELENIUM_VERSION=4.27.1
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECKOV_VERSION=3.3.30
MOTO_VERSION=5.2.6

cache="${EXPLORE_CACHE:-$HOME/.cache/explore}"
venv="$cache/test-venv"
checkov_venv="$cache/checkov-venv"
s3_venv="$cache/s3-venv"
start=$SECONDS

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v promtool >/dev/null || missing+=(prometheus)
# The PostgreSQL server binaries (any version; scripts/pg-test-cluster.sh takes the newest).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# A font, so that screenshots of the dashboard show text (chromium does not pull one in).
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
# The venv is made with Debian's python3 (python3-venv provides ensurepip there).
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# deploy/check.sh renders the overlays with `kubectl kustomize`; any kubectl that has it will do.
kubectl kustomize --help >/dev/null 2>&1 || missing+=(kubernetes-client)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing Debian packages for the tests: ${missing[*]} (usually 30 s to 2 minutes)"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
fi

if ! "$venv/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  echo "==> creating the test venv $venv with selenium $SELENIUM_VERSION (usually 10-30 s)"
  mkdir -p "$cache"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "selenium==$SELENIUM_VERSION"
fi

if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
  echo "==> installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv (usually 5-10 s)"
  t=$SECONDS
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  echo "    done in $((SECONDS - t)) s"
fi

if ! "$checkov_venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "==> installing checkov $CHECKOV_VERSION into $checkov_venv (usually 30-60 s)"
  t=$SECONDS
  [ -x "$checkov_venv/bin/python" ] || /usr/bin/python3 -m venv "$checkov_venv"
  "$checkov_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION"
  echo "    done in $((SECONDS - t)) s"
fi

if ! "$s3_venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null \
   || [ ! -x "$s3_venv/bin/moto_server" ]; then
  echo "==> installing moto $MOTO_VERSION (an S3-compatible server) into $s3_venv (usually 10-20 s)"
  t=$SECONDS
  [ -x "$s3_venv/bin/python" ] || /usr/bin/python3 -m venv "$s3_venv"
  "$s3_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" "flask==3.1.3" "flask-cors==6.0.5"
  echo "    done in $((SECONDS - t)) s"
fi

echo "==> deploy check tools: $(kubectl version --client 2>/dev/null | head -n 1), kubernetes-validate $KUBERNETES_VALIDATE_VERSION, checkov $CHECKOV_VERSION"
echo "==> test tools ready: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium ?'), selenium $SELENIUM_VERSION in $venv ($((SECONDS - start)) s)"
