#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster for the test suite (scripts/test.sh starts and stops it).
#   pg-test-cluster.sh start DIR   create a cluster under DIR and start it (a few seconds); prints
#                                  its URL, postgres://explore@127.0.0.1:PORT/postgres, and writes
#                                  it to DIR/url. On a DIR whose cluster is running it only prints
#                                  the URL.
#   pg-test-cluster.sh stop DIR    stop it (fine if it is not running) and remove DIR
#   pg-test-cluster.sh url DIR     print the URL of the cluster under DIR
# The cluster listens on 127.0.0.1 only, on a free port (the first free one from 55432 up), and
# puts its unix socket in DIR; its only role is the superuser `explore`, trusted without a
# password (nothing but local processes can reach it). Uses Debian's binaries, the newest
# /usr/lib/postgresql/<version>/bin (scripts/setup-test-tools.sh installs them).
# PostgreSQL refuses to run as root: as root, DIR is handed to the `postgres` system user (made by
# the Debian package) and initdb/pg_ctl run as that user, so DIR's parents must let it in (a
# directory under /tmp, e.g. from `mktemp -d`, does).
# Progress and errors go to stderr; stdout gets only the URL.
set -euo pipefail

FIRST_PORT=55432
PORT_TRIES=20
WAIT_SECONDS=30
MARKER=.explore-pg-test-cluster

usage() {
  echo "usage: $0 start|stop|url DIR" >&2
  exit 2
}

die() {
  echo "pg-test-cluster: $*" >&2
  exit 1
}

[ "$#" -eq 2 ] || usage
cmd="$1"
[ -n "$2" ] || usage
# An absolute path: the commands below run from inside DIR, and DIR goes into the configuration.
dir="$(realpath -m -- "$2")"
[ "$dir" != / ] || die "refusing to use / as the cluster directory"
data="$dir/data"
log="$dir/log"
url_file="$dir/url"
# PostgreSQL's programs look up their working directory, which must be open to the user they run
# as; the commands below run from / or from DIR.
cd /

find_bin() {
  local initdb
  initdb="$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)"
  [ -n "$initdb" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install Debian's postgresql package: bash scripts/setup-test-tools.sh)"
  bin="$(dirname "$initdb")"
}

# Runs a PostgreSQL command as the user that owns the cluster: `postgres` when we are root.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

is_running() {
  [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1
}

log_tail() {
  if [ -f "$log" ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 20 "$log" >&2
    echo "----" >&2
  fi
}

port_in_use() {
  # Something accepts connections there (a bound-but-silent port is caught when the server starts).
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
  find_bin
  # The server's unix socket is DIR/.s.PGSQL.PORT, and a socket path has at most 107 bytes.
  [ "${#dir}" -le 90 ] || die "the path $dir is too long for a unix socket in it (at most 90 characters)"
  if [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/$MARKER" ]; then
    die "$dir is not empty and is not a test cluster directory; give an empty or new directory"
  fi
  if [ -d "$dir" ] && is_running; then
    if [ -s "$url_file" ] && "$bin/pg_isready" -q -d "$(cat "$url_file")"; then
      cat "$url_file"
      return 0
    fi
    # Running but not answering at its URL (a start cut short): stopped and made anew.
    (cd "$dir" && as_owner "$bin/pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1) || true
  fi
  # A cluster left here that is not running (a killed run) is thrown away and made anew.
  rm -rf "$data" "$log" "$url_file" "$dir/initdb.log"
  mkdir -p "$dir"
  touch "$dir/$MARKER"

  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root, but there is no postgres user to run the server as (install Debian's postgresql package)"
    chown -R postgres: "$dir"
    runuser -u postgres -- test -w "$dir" -a -x "$dir" ||
      die "the postgres user cannot write $dir (a parent directory is closed to it?); use a directory under /tmp, e.g. from mktemp -d"
  fi
  cd "$dir"

  echo "==> pg-test-cluster: initdb in $data ($("$bin/postgres" --version), a few seconds)" >&2
  if ! as_owner "$bin/initdb" -D "$data" -U explore --auth=trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1; then
    tail -n 20 "$dir/initdb.log" >&2
    die "initdb failed (the full output is in $dir/initdb.log)"
  fi
  # A throwaway cluster for tests: small memory, and durability off (fsync, synchronous_commit,
  # full_page_writes), since a crash only loses data nobody keeps. max_connections leaves room for
  # tests running in parallel, each with its own pool.
  cat >>"$data/postgresql.conf" <<EOF

# scripts/pg-test-cluster.sh: a private, throwaway test cluster.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

  local port=$FIRST_PORT tries=0 ok=0
  while [ "$tries" -lt "$PORT_TRIES" ]; do
    while port_in_use "$port"; do port=$((port + 1)); done
    tries=$((tries + 1))
    rm -f "$log"
    # -w -t: pg_ctl waits until the server is up or has died, at most WAIT_SECONDS.
    if as_owner "$bin/pg_ctl" start -D "$data" -l "$log" -o "-p $port" -w -t "$WAIT_SECONDS" >/dev/null 2>&1; then
      ok=1
      break
    fi
    if [ "$tries" -lt "$PORT_TRIES" ] &&
      grep -qE 'could not (bind|create any TCP/IP sockets)|Address already in use' "$log" 2>/dev/null; then
      # Taken between our check and the server's bind (another cluster starting): the next one.
      echo "==> pg-test-cluster: port $port is taken, trying the next one" >&2
      as_owner "$bin/pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
      port=$((port + 1))
      continue
    fi
    break
  done
  if [ "$ok" -ne 1 ]; then
    log_tail
    die "the PostgreSQL server in $data did not start (on port $port, after $tries tries)"
  fi

  # The server is up; check it accepts connections over TCP as explore, as the tests connect.
  local waited=0
  until "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U explore -d postgres; do
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
      log_tail
      as_owner "$bin/pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
      die "pg_isready: the server on 127.0.0.1:$port did not accept connections within $WAIT_SECONDS s"
    fi
    sleep 1
    waited=$((waited + 1))
  done

  local url="postgres://explore@127.0.0.1:$port/postgres"
  echo "$url" >"$url_file"
  echo "==> pg-test-cluster: PostgreSQL is up at $url (data in $data, log $log)" >&2
  echo "$url"
}

stop() {
  [ -d "$dir" ] || return 0
  if [ -n "$(ls -A "$dir")" ] && [ ! -e "$dir/$MARKER" ]; then
    die "$dir is not a test cluster directory (no $MARKER in it); not removing it"
  fi
  if [ -f "$data/PG_VERSION" ]; then
    find_bin
    if is_running; then
      as_owner "$bin/pg_ctl" stop -D "$data" -m fast -w -t "$WAIT_SECONDS" >/dev/null 2>&1 ||
        as_owner "$bin/pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
    fi
  fi
  rm -rf -- "$dir"
}

url() {
  [ -s "$url_file" ] || die "no cluster URL in $url_file (start one with: $0 start $dir)"
  cat "$url_file"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  *) usage ;;
esac
