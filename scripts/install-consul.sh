#!/usr/bin/env bash
# Builds the real Consul server from the Go module proxy (Consul is not in
# Debian) into a throw-away module and caches the binary. Prints its path.
#
#   scripts/install-consul.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $NFHOST_CACHE or ~/.cache/nfhost, shared by every
# clone on the machine; the repo's git-ignored .cache/ is also looked at.
# A later call finds the cached binary and returns at once. Takes 4 to 6
# minutes on a 2-core machine the first time.
set -euo pipefail
VERSION=${CONSUL_VERSION:-1.20.6}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${NFHOST_CACHE:-$HOME/.cache/nfhost}}
bin=$cache/consul-$VERSION/consul
# The version is read into a variable first: `consul version | grep -q`
# under pipefail fails whenever grep exits before consul finished writing
# (SIGPIPE), which made a cached binary look missing and rebuilt it.
is_wanted() {
  local v
  [[ -x $1 ]] && v=$("$1" version 2>/dev/null) && [[ $v == *"Consul v$VERSION"* ]]
}
for cand in "$bin" "$root/.cache/consul-$VERSION/consul"; do
  if is_wanted "$cand"; then
    echo "$cand"
    exit 0
  fi
done
if command -v consul >/dev/null && is_wanted "$(command -v consul)"; then
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
