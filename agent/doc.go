// Package agent wires bpfleet's parts together on a device. [Agent] is the daemon: it keeps an
// MQTT session with the fleet (package sync), checks every trust delta against the update keys
// in its [Config] and applies it to the trust store, and reports its state. The functions in
// this package that the local CLI uses ([ImportImage], [Images], [Verify],
// [TrustStatus]) work from the data directory alone and never touch the network.
//
// Data directory layout: trust/ holds the Badger trust store, images/ an OCI image layout.
//
// Lifecycle: the agent opens the trust store only while it applies deltas and closes it when
// its queue is empty, so the CLI can use the same store between deltas (each side waits for the
// other's lock). While the broker is unreachable the agent keeps running and retries; nothing it
// holds is lost. Cancelling the context passed to [Agent.Run] marks the device offline on the
// broker (when reachable) and returns once the store is closed.
package agent
