#!/usr/bin/env bash
# Run every fuzz target of the repository for a bounded time each (CI-friendly).
#
#   scripts/fuzz.sh                          # each target for $BPFLEET_FUZZTIME (default 100000x)
#   BPFLEET_FUZZTIME=5000000x scripts/fuzz.sh  # a longer local run
#   BPFLEET_FUZZTIME=5m scripts/fuzz.sh      # by wall clock (see below)
#
# The default is a count of inputs, not a duration: with a duration, Go 1.26's fuzz coordinator
# can report a spurious "context deadline exceeded" failure when the deadline races a worker
# still running an input (golang/go#75804, fixed in Go 1.27), which failed CI once on 2 cores
# with no failing input. A count has no deadline to race; 100000 inputs take 4-15 s per target here.
#
# Targets are found by grepping for `func FuzzX(` in *_test.go files, so new ones are picked up
# without editing this script. A failing input is written by `go test` under the package's
# testdata/fuzz/FuzzX/ (commit it: it then runs as a regression test in every `go test`), and
# the script exits non-zero after running all targets.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
GO=${GO:-go}
fuzztime=${BPFLEET_FUZZTIME:-100000x}

targets=$(grep -rE --include='*_test.go' -o '^func Fuzz[A-Za-z0-9_]+\(' . | sed -E 's|^\./||; s|:func |:|; s|\($||' | sort -u)
if [ -z "$targets" ]; then
	echo "fuzz: no fuzz targets found" >&2
	exit 1
fi

failed=()
n=0
while IFS=: read -r file name; do
	pkg=./$(dirname "$file")
	n=$((n + 1))
	echo "=== fuzz $pkg $name ($fuzztime)"
	if ! $GO test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" </dev/null; then
		failed+=("$pkg $name")
	fi
done <<<"$targets"

if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} of $n target(s) failed:" >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
echo "fuzz: $n target(s) passed"
