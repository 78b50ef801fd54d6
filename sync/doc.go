// Package sync carries trust from the fleet operator to devices: the wire format of a trust
// delta (a COSE_Sign1 envelope around deterministic CBOR), the checks a device makes before a
// delta may touch its store, and the MQTT transport both sides use.
//
// The three concerns are kept apart so each can be tested alone: [Seal] and [Open] turn a
// [Delta] into bytes and back and never touch the store or the network; [Apply] writes an opened
// delta into a trust store; [Subscribe] and [Publish] move bytes over MQTT.
//
// Order of checks on a device, cheapest and least trusting first: the message size is capped
// before any decoding; the envelope must be well-formed CBOR within strict limits (no tags, no
// indefinite lengths, bounded nesting and sizes); its signature must verify, over the bytes as
// received, with one of the update keys provisioned on the device; only then is the payload
// decoded, strictly (unknown fields and duplicate keys are errors); then [Apply] checks the
// fleet and the version. A delta that fails any step changes nothing.
//
// Topics (see docs/protocol.md): deltas are published with QoS 1 on [DeltaTopic], and each
// device publishes its state, retained, on [StatusTopic].
package sync
