#!/usr/bin/env bash
# The whole test suite, set-up included: installs what is missing (scripts/setup.sh), checks
# formatting and lints, builds the binaries the end-to-end tests start, and runs every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
# Chromium, ChromeDriver, promtool and the Selenium venv (the browser and metrics tests).
bash scripts/setup-test-tools.sh
# setup.sh installs the data sets, so a test that finds one missing must fail, not skip.
export EXPLORE_REQUIRE_DATA=1
# setup-test-tools.sh installs the browser, so the dashboard test must not skip either.
export EXPLORE_REQUIRE_BROWSER=1

echo "==> cargo fmt --check (seconds)"
cargo fmt --all -- --check
echo "==> deploy/check.sh: render the Kubernetes overlays, validate them, checkov (seconds)"
bash deploy/check.sh
echo "==> the master must not link libtorch"
if cargo tree -p explore-master -e normal,build --prefix none | grep -qE '^(tch|torch-sys) '; then
  echo "explore-master depends on tch/torch-sys" >&2
  exit 1
fi
echo "==> cargo clippy (first run about 5-10 minutes on 2 cores, later runs seconds to a minute)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (binaries for the end-to-end tests; first build about 15 minutes on 2 cores, later builds seconds)"
cargo build --workspace --bins --quiet
echo "==> cargo test (builds the test executables, then runs the suite; tens of minutes on 2 cores: the end-to-end tests train real networks)"
cargo test --workspace --no-fail-fast -- --test-threads 2
