#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests and Dockerfiles (scripts/test.sh runs it; any failure
# fails the run). For each overlay under deploy/k8s/overlays/:
#   1. render it with `kubectl kustomize` into target/deploy/<overlay>.yaml;
#   2. validate every object against the Kubernetes $K8S_VERSION schemas, strictly (unknown
#      fields are errors), with kubernetes-validate from the test venv;
#   3. run checkov's Kubernetes policies on the rendered file;
#   4. make sure it carries no credentials: no Secret object (explore-token and explore-db are
#      created by the user) and no URL with a password in it (user:password@).
# Then checkov's Dockerfile policies on deploy/Dockerfile.*. Every check skipped on purpose is
# skipped in the manifest itself with its reason (`checkov.io/skipN: "CKV_…=reason"` annotations,
# `# checkov:skip=CKV_…: reason` in Dockerfiles); a skip without a reason fails here.
# scripts/setup-test-tools.sh installs the tools. About 10 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# The oldest Kubernetes the manifests are for: backoffLimitPerIndex is GA in 1.33.
K8S_VERSION=1.33.0
cache="${EXPLORE_CACHE:-$HOME/.cache/explore}"
validate="$cache/test-venv/bin/kubernetes-validate"
checkov="$cache/checkov-venv/bin/checkov"
out="$root/target/deploy"
start=$SECONDS

for tool in "$validate" "$checkov"; do
  if [ ! -x "$tool" ]; then
    echo "deploy/check.sh: $tool is missing: run scripts/setup-test-tools.sh" >&2
    exit 1
  fi
done
if ! kubectl kustomize --help >/dev/null 2>&1; then
  echo "deploy/check.sh: \`kubectl kustomize\` is missing: run scripts/setup-test-tools.sh" >&2
  exit 1
fi
mkdir -p "$out"

echo "==> every checkov skip gives a reason"
bad=$(grep -rnE 'checkov(\.io/skip[0-9]+|:skip=)' deploy/k8s deploy/Dockerfile.* |
  grep -vE 'checkov\.io/skip[0-9]+: "CKV2?_[A-Z0-9_]+=[^"]{10,}"|checkov:skip=CKV2?_[A-Z0-9_]+: .{10,}' || true)
if [ -n "$bad" ]; then
  echo "deploy/check.sh: checkov skips without a reason:" >&2
  echo "$bad" >&2
  exit 1
fi

# checkov: no calls home (--skip-download), nothing but the named framework.
checkov_args=(--compact --quiet --skip-download)
overlays=0
for dir in deploy/k8s/overlays/*/; do
  name="$(basename "$dir")"
  rendered="$out/$name.yaml"
  echo "==> deploy/k8s/overlays/$name: kubectl kustomize > target/deploy/$name.yaml"
  # Newer kustomize releases warn (on stderr) about the kustomize 2 field names these files keep
  # for the old kubectl of Debian's kubernetes-client; the warnings are kept out of the log.
  if ! kubectl kustomize "$dir" >"$rendered" 2>"$out/$name.kustomize.log"; then
    cat "$out/$name.kustomize.log" >&2
    exit 1
  fi
  echo "==> $name: kubernetes-validate --strict against Kubernetes $K8S_VERSION"
  "$validate" --strict --kubernetes-version "$K8S_VERSION" --quiet "$rendered"
  echo "==> $name: checkov (kubernetes)"
  "$checkov" --framework kubernetes -f "$rendered" "${checkov_args[@]}"
  echo "==> $name: no credentials in the manifests"
  if grep -nE '^kind: Secret$|[a-z][a-z0-9+.-]*://[^/@[:space:]]+:[^/@[:space:]]+@' "$rendered" >&2; then
    echo "deploy/check.sh: $rendered holds a Secret or a URL with a password (above)" >&2
    exit 1
  fi
  overlays=$((overlays + 1))
done
if [ "$overlays" -eq 0 ]; then
  echo "deploy/check.sh: no overlay under deploy/k8s/overlays" >&2
  exit 1
fi

echo "==> checkov (dockerfile): deploy/Dockerfile.master deploy/Dockerfile.worker"
"$checkov" --framework dockerfile -f deploy/Dockerfile.master -f deploy/Dockerfile.worker "${checkov_args[@]}"

echo "==> deploy manifests checked: $overlays overlay(s), Kubernetes $K8S_VERSION schemas ($((SECONDS - start)) s)"
