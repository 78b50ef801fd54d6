#!/usr/bin/env bash
# Prints the path of a real gadget image exported by Inspektor Gadget's own tooling, for the
# third-party image test (cmd/bpfleet/ig_test.go):
#
#   BPFLEET_IG_TRACE_OPEN=$(scripts/ig-image.sh)
#
# The image is docs/api/_golang/from_file/trace_open.tar of the public inspektor-gadget
# repository: `ig image export` output of ghcr.io/inspektor-gadget/gadget/trace_open:latest
# (an OCI index, amd64 and arm64 manifests, unsigned). It is fetched as part of the pinned Go
# module version, with `go mod download`, so the Go checksum database vouches for it and the
# module cache keeps it; nothing is added to bpfleet's go.mod. Progress goes to stderr; stdout is
# only the path.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
IG_MODULE=github.com/inspektor-gadget/inspektor-gadget
IG_VERSION=${IG_VERSION:-v0.55.0}
IG_FILE=docs/api/_golang/from_file/trace_open.tar

# Outside any module (an empty directory) and with the machine's own Go, so bpfleet's go.mod,
# go.sum and GOFLAGS play no part.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! info=$(cd "$tmp" && GOTOOLCHAIN=local GOFLAGS= GOWORK=off "$GO" mod download -json "$IG_MODULE@$IG_VERSION"); then
	echo "ig-image: go mod download $IG_MODULE@$IG_VERSION failed:" >&2
	echo "$info" >&2
	exit 1
fi
# The "Dir" line of the JSON (a module cache path has no quotes in it).
dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
if [ -z "$dir" ]; then
	echo "ig-image: go mod download $IG_MODULE@$IG_VERSION reported no module directory:" >&2
	echo "$info" >&2
	exit 1
fi
if [ ! -f "$dir/$IG_FILE" ]; then
	echo "ig-image: $IG_FILE is not in $IG_MODULE@$IG_VERSION ($dir)" >&2
	exit 1
fi
echo "$dir/$IG_FILE"
