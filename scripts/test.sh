#!/usr/bin/env bash
# The whole test suite, set-up included: installs what is missing (scripts/setup.sh), checks
# formatting and lints, builds the binaries the end-to-end tests start, and runs every test
# (with a private PostgreSQL cluster for the PostgreSQL store's tests, stopped on exit).
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
# ... nor the object-storage test (its S3-compatible server comes from setup-test-tools.sh).
export EXPLORE_REQUIRE_S3=1
# Every cargo command below builds the master with object storage (S3, GCS, Azure), which the
# object-storage test needs; one feature set for all of them, so none rebuilds another's work.
features=(--features explore-master/cloud)

# A private, throwaway PostgreSQL cluster on 127.0.0.1 (scripts/pg-test-cluster.sh, a few
# seconds), removed when this script ends, whether the tests pass or not. Started before the
# builds so that CI fails early when it cannot start.
pg_dir="$(mktemp -d)"
stop_pg() { bash "$root/scripts/pg-test-cluster.sh" stop "$pg_dir" >/dev/null 2>&1 || true; }
trap stop_pg EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "==> starting a private PostgreSQL cluster for the tests (seconds)"
if pg_url="$(bash scripts/pg-test-cluster.sh start "$pg_dir")"; then
  export EXPLORE_TEST_PG_URL="$pg_url"
  # In CI the PostgreSQL tests must run, not skip.
  if [ -n "${CI:-}" ]; then export EXPLORE_REQUIRE_PG=1; fi
elif [ -n "${CI:-}" ]; then
  echo "error: the PostgreSQL test cluster did not start (see above); CI needs it" >&2
  exit 1
else
  echo "WARNING: the PostgreSQL test cluster did not start (see above): the PostgreSQL store's tests will be SKIPPED" >&2
fi

echo "==> cargo fmt --check (seconds)"
cargo fmt --all -- --check
echo "==> deploy/check.sh: render the Kubernetes overlays, validate them, checkov (seconds)"
bash deploy/check.sh
echo "==> the master must not link libtorch"
if cargo tree -p explore-master -e normal,build --prefix none | grep -qE '^(tch|torch-sys) '; then
  echo "explore-master depends on tch/torch-sys" >&2
  exit 1
fi
echo "==> the master without object storage (the default build) still compiles (seconds to a minute)"
cargo check -p explore-master --quiet
echo "==> cargo clippy (first run about 5-10 minutes on 2 cores, later runs seconds to a minute)"
cargo clippy --workspace --all-targets "${features[@]}" --quiet -- -D warnings
echo "==> cargo build (binaries for the end-to-end tests; first build about 5 minutes on 2 cores, later builds seconds)"
# On a terminal cargo's own progress bar shows how far the build is; in a log (CI), nothing.
if [[ -t 2 ]]; then quiet=(); else quiet=(--quiet); fi
cargo build --workspace --bins "${features[@]}" "${quiet[@]}"
echo "==> cargo test (builds the test executables, then runs the suite; tens of minutes on 2 cores: the end-to-end tests train real networks)"
cargo test --workspace "${features[@]}" --no-fail-fast -- --test-threads 2

# The same suites again with the pool on PostgreSQL (EXPLORE_TEST_PG_URL is always set in CI,
# where the cluster above must start): the scheduler tests, then the fault suite and the
# end-to-end tests that start real masters, each master on a fresh database of the cluster.
if [ -n "${EXPLORE_TEST_PG_URL:-}" ]; then
  echo "==> the scheduler tests on PostgreSQL (about 1.5 minutes on 2 cores: 82 tests, each on a schema of its own)"
  # --workspace, as above: a single-package build unifies features differently and would
  # recompile a third of the dependencies (about 3 minutes) for the same tests.
  EXPLORE_SCHEDULER_TESTS_DB=postgres cargo test --workspace "${features[@]}" --lib -- scheduler_tests
  echo "==> the fault suite and the cluster end-to-end tests on PostgreSQL (2.5 to 4 minutes on 2 cores, each master on a fresh database)"
  EXPLORE_E2E_DB=postgres cargo test --workspace "${features[@]}" --no-fail-fast \
    --test faults --test e2e_cluster --test e2e_slots --test e2e_failover --test e2e_control \
    -- --test-threads 2
fi
