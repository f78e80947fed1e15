#!/usr/bin/env bash
# Builds the real Consul server from the Go module proxy (Consul is not in
# Debian) into a throw-away module and caches the binary. Prints its path.
#
#   scripts/install-consul.sh [CACHE_DIR]     default: .cache/ in the repo
#
# A later call finds the cached binary and returns at once. Takes 4 to 6
# minutes on a 2-core machine the first time.
set -euo pipefail
VERSION=${CONSUL_VERSION:-1.20.6}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/.cache}
bin=$cache/consul-$VERSION/consul
if [[ -x $bin ]] && "$bin" version 2>/dev/null | grep -q "Consul v$VERSION"; then
  echo "$bin"
  exit 0
fi
if command -v consul >/dev/null && consul version 2>/dev/null | grep -q "Consul v$VERSION"; then
  command -v consul
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building consul v$VERSION from the Go module proxy (takes a few minutes)..." >&2
cd "$work"
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/hashicorp/consul"
GO
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
go mod init consulbuild >/dev/null 2>&1
go get "github.com/hashicorp/consul@v$VERSION" >&2
mkdir -p "$(dirname "$bin")"
go build -o "$bin.tmp" github.com/hashicorp/consul >&2
mv "$bin.tmp" "$bin"
echo "$bin"
