#!/usr/bin/env bash
# bpfleet demo: trust pushed over MQTT, then a gadget verified and run with the broker gone.
# Everything runs on this machine: Mosquitto on 127.0.0.1 with its own config in a temp dir, a
# device data directory in the same temp dir. Every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BPFLEET_BUILD:-$PWD/build}
bpfleet=$BUILD/bin/bpfleet
ctl=$BUILD/bin/bpfleetctl
work=$(mktemp -d /tmp/bpfleet-demo.XXXXXX)
mosq_pid= agent_pid=
cleanup() {
	[ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null
	[ -n "$mosq_pid" ] && kill "$mosq_pid" 2>/dev/null && wait "$mosq_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# flip_byte FILE: inverts the byte in the middle of FILE.
flip_byte() {
	local off=$(($(stat -c %s "$1") / 2)) b
	b=$(dd if="$1" bs=1 skip="$off" count=1 status=none | od -An -tu1 | tr -d ' ')
	printf "\\x$(printf %02x $((255 - b)))" | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
}

port=$((20000 + RANDOM % 20000))
step "Mosquitto on 127.0.0.1:$port (config in $work/mosquitto)"
mkdir -p "$work/mosquitto"
cat >"$work/mosquitto/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
message_size_limit 1048576
persistence true
persistence_location $work/mosquitto/
user root
log_dest file $work/mosquitto/mosquitto.log
CONF
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto" -c "$work/mosquitto/mosquitto.conf" 2>>"$work/mosquitto/stderr" & mosq_pid=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
broker=tcp://127.0.0.1:$port

step "Operator: keys for the fleet's root, its trust deltas and its gadgets (cosign format), and root 1"
for k in root fleet gadget; do COSIGN_PASSWORD= "$ctl" keygen --output-key-prefix "$work/keys/$k"; done
COSIGN_PASSWORD= "$ctl" root --state-dir "$work/fleet" --fleet demo --root-key "$work/keys/root.pub" \
	--delta-key "$work/keys/fleet.pub" --sign "$work/keys/root.key"

step "Operator: package trace_exec as an Inspektor Gadget OCI image and sign it (cosign legacy .sig)"
"$ctl" package --layout "$work/layout" --ref trace_exec:latest \
	--elf "$BUILD/gadgets/trace_exec.bpf.o" --metadata gadgets/trace_exec/gadget.yaml
COSIGN_PASSWORD= "$ctl" sign --layout "$work/layout" --key "$work/keys/gadget.key" trace_exec:latest

step "Device: provisioned with the fleet's root, the agent starts"
cat >"$work/agent.json" <<CONF
{"device_id": "demo-device", "fleet": "demo", "broker": "$broker", "root": "fleet/root.cbor"}
CONF
"$bpfleet" --data-dir "$work/device" agent --config "$work/agent.json" 2>"$work/agent.log" & agent_pid=$!
"$bpfleet" --data-dir "$work/device" image import "$work/layout"
"$bpfleet" --data-dir "$work/device" image list
echo "Before any trust arrives, the device refuses the gadget:"
"$bpfleet" --data-dir "$work/device" verify trace_exec && { echo "demo: verified without trust" >&2; exit 1; } || true

step "Operator: a trust delta (gadget key + signature), signed by the fleet's delta key, over MQTT QoS 1"
COSIGN_PASSWORD= "$ctl" delta --state-dir "$work/fleet" --sign "$work/keys/fleet.key" \
	--trust-key "$work/keys/gadget.pub" --signatures-from "$work/layout" -o "$work/delta-1.cbor"
"$ctl" publish --broker "$broker" --fleet demo --wait-device demo-device --timeout 30s "$work/delta-1.cbor"
"$bpfleet" --data-dir "$work/device" trust status

step "The broker goes away (agent keeps running: pid $agent_pid)"
kill "$mosq_pid"; wait "$mosq_pid" 2>/dev/null || true; mosq_pid=
kill -0 "$agent_pid"
(exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { echo "demo: broker still up" >&2; exit 1; }
echo "broker on port $port is down"

step "Device, offline: verify and run trace_exec for 4 s while some commands run"
"$bpfleet" --data-dir "$work/device" verify trace_exec
"$bpfleet" --data-dir "$work/device" run trace_exec --timeout 4s & run_pid=$!
sleep 1.5
for c in "uname -r" "id -u" "cat /etc/hostname" "ls /"; do $c >/dev/null; done
wait "$run_pid"

step "A tampered copy: one byte of the eBPF program changed, repackaged under trace_exec:tampered"
cp "$BUILD/gadgets/trace_exec.bpf.o" "$work/tampered.bpf.o"
flip_byte "$work/tampered.bpf.o"
"$ctl" package --layout "$work/tampered" --ref trace_exec:tampered \
	--elf "$work/tampered.bpf.o" --metadata gadgets/trace_exec/gadget.yaml
"$bpfleet" --data-dir "$work/device" image import "$work/tampered"
if "$bpfleet" --data-dir "$work/device" run trace_exec:tampered --timeout 2s; then
	echo "demo: the tampered gadget ran" >&2; exit 1
fi
echo "refused, as it must be"

step "Tampering on the device: one byte of the signed gadget's eBPF program changed on disk"
layer=$("$bpfleet" --data-dir "$work/device" image inspect trace_exec | awk '/vnd.gadget.ebpf.program/ {print $2}')
blob="$work/device/images/blobs/sha256/${layer#sha256:}"
flip_byte "$blob"
if "$bpfleet" --data-dir "$work/device" run trace_exec --timeout 2s; then
	echo "demo: the tampered gadget ran" >&2; exit 1
fi
echo "refused, as it must be"

step "Agent log"
cat "$work/agent.log"
