# Sourced by the A/B scripts (bench/ab_masters.sh, bench/ab_tail.sh): starts a master and waits
# for its gRPC address.
#
#   start_master BIN DIR   `BIN serve` on a loopback port, its pool in DIR/data, stdout in
#                          DIR/out and log in DIR/log (level warn); sets `pid` and `addr`
#                          (host:port), or says why it did not start and returns 1.
start_master() {
  local bin=$1 dir=$2
  RUST_LOG=warn "$bin" serve --listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>"$dir/log" &
  pid=$!
  addr=
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/^master listening on //p' "$dir/out")
    [[ -n "$addr" ]] && return 0
    sleep 0.1
  done
  echo "master $bin did not start: $(tail -3 "$dir/log")" >&2
  kill "$pid" 2>/dev/null || true
  pid=
  return 1
}
