#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every
# check: formatting, vet, staticcheck, the race-enabled test suite (which
# creates network namespaces, so it needs root) and the fuzz seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the tests create network namespaces; run as root (sudo)" >&2
  exit 1
fi

# Debian packages: ip/ss (the oracle), nft (blackholes), tmux (drives
# `tcplens top` in a real terminal), chromium (loads tcplens report's HTML in
# the report test), GNU time (bench).
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ss >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
# prometheus and promtool: the exporter test scrapes with a real Prometheus,
# and the alert rules are unit-tested with promtool test rules.
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v tmux >/dev/null || need+=(tmux)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

export PATH="$PATH:$(go env GOPATH)/bin"
if ! command -v staticcheck >/dev/null; then
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
echo "== go vet"
go vet ./...
echo "== staticcheck"
staticcheck ./...
echo "== go test -race"
go test -race -count=1 -timeout 15m ./...
