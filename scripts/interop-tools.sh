#!/usr/bin/env bash
# Installs the tools of the cosign interoperability test (cmd/bpfleet/interop_test.go), only when
# missing, outside the module (nothing is added to go.mod), and prints the directory that holds
# them:
#
#   cosign  github.com/sigstore/cosign/v2/cmd/cosign      (signs, saves, loads, verifies)
#   crane   github.com/google/go-containerregistry/cmd/crane  (`crane registry serve`, `crane push`)
#
#   dir=$(scripts/interop-tools.sh)   # ${XDG_CACHE_HOME:-$HOME/.cache}/bpfleet/tools by default
#
# Each tool is built with `go install` from the Go module proxy into <dir>/<name>-<version>/ and
# <dir>/<name> links to it, so a version bump installs anew and an installed one is reused.
# BPFLEET_TOOLS_DIR overrides the directory. Progress goes to stderr; stdout is only the path.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
COSIGN_VERSION=${COSIGN_VERSION:-v2.6.5}
CRANE_VERSION=${CRANE_VERSION:-v0.22.1}
dir=${BPFLEET_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/bpfleet/tools}
mkdir -p "$dir"

install_tool() { # name module-path version
	local name=$1 pkg=$2 version=$3
	local target=$dir/$name-$version
	if [ ! -x "$target/$name" ]; then
		echo "interop-tools: installing $pkg@$version into $target" >&2
		local start=$SECONDS
		# Outside the work tree and with the machine's own Go: the module's go.mod and GOFLAGS
		# play no part, and a tool that needs a newer Go fails here instead of fetching one.
		(cd / && GOBIN=$target.tmp CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
			"$GO" install -trimpath -ldflags=-s "$pkg@$version")
		rm -rf "$target" && mv "$target.tmp" "$target"
		echo "interop-tools: $name $version installed in $((SECONDS - start))s" >&2
	fi
	ln -sfn "$name-$version/$name" "$dir/$name"
}

install_tool crane github.com/google/go-containerregistry/cmd/crane "$CRANE_VERSION"
install_tool cosign github.com/sigstore/cosign/v2/cmd/cosign "$COSIGN_VERSION"
echo "$dir"
