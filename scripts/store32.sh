#!/usr/bin/env bash
# The trust store on 32-bit platforms: cross-compiles internal/trust/store's tests for 386 (run
# natively on amd64) and armv7 (run under qemu-arm user emulation when it is installed or
# installable) and runs the big round trip and the self-check tests. Badger v4.9.6 with
# ristretto v2.2.0–v2.4.2 corrupts tables on 32-bit unless the store's options work around it
# (store.go, for32Bit). Knobs: BPFLEET_STORE_KEYS (default 100000), BPFLEET_STORE_RESTARTS
# (default 3), STORE32_ARCHES (default "386 arm").
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
arches=${STORE32_ARCHES:-386 arm}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export BPFLEET_STORE_KEYS=${BPFLEET_STORE_KEYS:-100000} BPFLEET_STORE_RESTARTS=${BPFLEET_STORE_RESTARTS:-3}
run='TestBigStoreRoundTrip|SelfCheck|TableProbe|TestOpen|TestApply|TestVerify'
host=$($GO env GOHOSTARCH)
for a in $arches; do
	runner=()
	case "$a/$host" in
	386/amd64 | 386/386 | arm/arm) ;;
	arm/*)
		if ! command -v qemu-arm >/dev/null; then
			if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
				(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user) >/dev/null
			fi
		fi
		if ! command -v qemu-arm >/dev/null; then
			if [ -n "${CI:-}" ]; then # CI must prove the armv7 store, not skip it
				echo "store32: qemu-arm not available (apt-get install qemu-user failed?)" >&2
				exit 1
			fi
			echo "store32: qemu-arm not available, skipping armv7"
			continue
		fi
		runner=(qemu-arm)
		;;
	*)
		echo "store32: cannot run $a binaries on $host, skipping"
		continue
		;;
	esac
	CGO_ENABLED=0 GOOS=linux GOARCH=$a GOARM=7 $GO test -c -o "$out/store-$a.test" ./internal/trust/store
	echo "store32: $a: $BPFLEET_STORE_KEYS records, $BPFLEET_STORE_RESTARTS restarts"
	start=$(date +%s)
	(cd "$out" && "${runner[@]}" "./store-$a.test" -test.run "$run" -test.count=1 -test.timeout 10m -test.v) |
		grep -E '^(--- |ok|FAIL|PASS|panic)|bigstore_test|selfcheck_test' || { echo "store32: $a FAILED"; exit 1; }
	echo "store32: $a passed in $(($(date +%s) - start)) s"
done
