#!/usr/bin/env bash
# Build a real kube-apiserver and etcd from the Go module proxy (no binary downloads), cached by version.
#
#   infra/kube/build.sh            build (or reuse) the binaries; prints the bin directory
#   infra/kube/build.sh init V     regenerate go.mod/go.sum for k8s.io/kubernetes vV (e.g. 1.34.4)
#
# Why a wrapper module: k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0 and
# replaces them with ./staging paths, so `go install k8s.io/kubernetes/cmd/kube-apiserver@v1.x` fails.
# go.mod here replaces each staging module with its published v0.x.y twin (kubernetes/kubernetes#79384).
#
# Cache: ${CANARY_STREAM_CACHE:-~/.cache/canary-stream}/kube-v<version>/bin/{kube-apiserver,etcd} and a
# stamp file written last (holding the go.mod/go.sum digest), so an interrupted build is redone and a
# version bump builds into a new directory. GOMODCACHE/GOCACHE are Go's defaults.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

init() {
  local v="${1#v}" minor staging_mod etcd_v
  minor="0.${v#1.}"
  staging_mod="$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [ -f "$staging_mod" ] || { echo "no go.mod for k8s.io/kubernetes@v$v" >&2; exit 1; }
  {
    echo "// Wrapper module: builds kube-apiserver and etcd for the tests (infra/kube/build.sh)."
    echo "// The replace block is derived from k8s.io/kubernetes v$v's own go.mod by 'build.sh init $v'."
    echo "module canary-stream/infra/kube"
    echo
    echo "go 1.24.0"
    echo
    echo "replace ("
    # k8s.io/X => ./staging/src/k8s.io/X   becomes   k8s.io/X => k8s.io/X v0.N.M
    sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/k8s\.io/.*#\t\1 => \1 v'"$minor"'#p' "$staging_mod"
    echo ")"
  } > go.mod
  rm -f go.sum
  # An explicit version: a bare package path means @upgrade (the newest k8s.io/kubernetes).
  go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@v$v"
  # etcd at exactly the version Kubernetes pins: a newer one would move shared deps (grpc, otel) under k8s.
  etcd_v="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
  go get -tool "go.etcd.io/etcd/server/v3@$etcd_v"
  go mod tidy
  echo "go.mod: k8s.io/kubernetes v$v, etcd $etcd_v"
}

kube_version() { go list -m -f '{{.Version}}' k8s.io/kubernetes; }

build() {
  local v cache out stamp digest tmp minor ldf
  BUILD_TMP=""
  v="$(kube_version)"
  cache="${CANARY_STREAM_CACHE:-$HOME/.cache/canary-stream}"
  out="$cache/kube-$v/bin"
  stamp="$out/.complete"
  digest="$(cat go.mod go.sum | sha256sum | cut -d' ' -f1)"
  complete() { [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$digest" ]; }
  if complete; then echo "$out"; return; fi
  mkdir -p "$out"
  # One build at a time per version (parallel test sessions, make kube-bins): wait, then re-check.
  exec 9>"$out/../.lock"
  flock 9
  if complete; then echo "$out"; return; fi
  rm -f "$stamp"
  minor="${v#v1.}"; minor="${minor%%.*}"
  ldf="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1"
  ldf="$ldf -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  rm -rf "$out"/.build.*  # left by an interrupted build (we hold the lock)
  BUILD_TMP="$(mktemp -d "$out/.build.XXXXXX")"
  trap 'rm -rf "$BUILD_TMP"' EXIT
  tmp="$BUILD_TMP"
  local t0=$SECONDS
  echo "downloading modules for kube $v ..." >&2
  go mod download
  echo "downloaded in $((SECONDS - t0)) s; building (about 15-25 min on 2 cores, once) ..." >&2
  t0=$SECONDS
  CGO_ENABLED=0 go build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "$ldf" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  echo "kube-apiserver built in $((SECONDS - t0)) s" >&2
  t0=$SECONDS
  CGO_ENABLED=0 go build -p "${GO_BUILD_P:-2}" -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
  echo "etcd built in $((SECONDS - t0)) s" >&2
  mv -f "$tmp/kube-apiserver" "$tmp/etcd" "$out/"
  echo "$digest" > "$stamp"
  echo "$out"
}

case "${1:-build}" in
  init) [ $# -eq 2 ] || { echo "usage: $0 init <k8s version, e.g. 1.34.4>" >&2; exit 2; }; init "$2" ;;
  build) build ;;
  *) echo "usage: $0 [build | init <version>]" >&2; exit 2 ;;
esac
