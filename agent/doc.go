// Package agent wires bpfleet's parts together on a device. [Agent] is the daemon: it keeps an
// MQTT session with the fleet (package sync), checks every root, delta and override against the
// fleet root it was provisioned with (its [Config]) or rotated to, applies them to the trust
// store, catches up on what it missed, and reports its state. The functions in this package that
// the local CLI uses ([ImportImage], [Images], [InspectImage], [Verify], [ApproveRun],
// [TrustStatus], [AuditLog], ...) work from the data directory alone and never touch the network.
//
// Data directory layout: trust/ holds the Badger trust store, images/ an OCI image layout.
//
// Lifecycle: one agent per data directory (it holds agent.lock while it runs). It opens the
// trust store only while it handles messages and closes it when its queue is empty, so the CLI
// can use the same store between deltas (the CLI waits up to 10 s for the lock; the agent keeps
// unhandled messages pending, unacknowledged, and retries). While the broker is unreachable the agent keeps running and retries; nothing it
// holds is lost. Cancelling the context passed to [Agent.Run] marks the device offline on the
// broker (when reachable) and returns once the store is closed.
package agent
