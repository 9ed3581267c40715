#!/usr/bin/env bash
# The whole test suite, set-up included: installs what is missing (scripts/setup.sh), checks
# formatting and lints, builds the binaries the end-to-end tests start, and runs every test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
# setup.sh installs the data sets, so a test that finds one missing must fail, not skip.
export EXPLORE_REQUIRE_DATA=1

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> the master must not link libtorch"
if cargo tree -p explore-master -e normal,build --prefix none | grep -qE '^(tch|torch-sys) '; then
  echo "explore-master depends on tch/torch-sys" >&2
  exit 1
fi
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo build (binaries for the end-to-end tests)"
cargo build --workspace --bins --quiet
echo "==> cargo test"
cargo test --workspace --no-fail-fast -- --test-threads 2
