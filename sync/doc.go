// Package sync carries trust from the fleet operator to devices, after TUF and Uptane: the
// wire format of roots, deltas and break-glass overrides (COSE_Sign messages around
// deterministic CBOR), the checks a device makes before anything touches its store, the
// operator's side (a History of everything issued, an Issuer that builds the next root or
// delta, a catch-up server), and the MQTT transport both sides use.
//
// The concerns are kept apart so each can be tested alone: [SealRoot], [SealDelta],
// [SealOverride] and [TrustedRoot.Open] turn messages into bytes and back and never touch the
// store or the network; [Apply] and [ApplyChain] write opened deltas into a trust store;
// [Connect], [Publish], [Serve] and [FleetStatus] move bytes over MQTT.
//
// Order of checks on a device, cheapest and least trusting first: the message size is capped
// before any decoding; the envelope must be well-formed CBOR within strict limits (only the
// COSE_Sign tag, no indefinite lengths, bounded nesting and sizes); a threshold of the right
// role's keys must have signed it, verified over the bytes as received; only then is the
// payload decoded, strictly (unknown fields and duplicate keys are errors); then the fleet,
// the version and the hash chain (base and resulting state digests) are checked. A message that
// fails any step changes nothing. A delta's own expiry is not checked: a device catching up
// must pass through old deltas; the store keeps the newest delta's expiry and package verify
// judges staleness (strict refuses, other levels warn). A validly signed message that
// contradicts what the device holds (ErrConflict) is a fork or a stolen key, not a replay.
//
// Topics (see docs/protocol.md): roots and deltas are published with QoS 1 on [UpdatesTopic];
// devices ask for what they missed on [CatchUpTopic] and get [Batch]es on their [ReplyTopic];
// each device publishes its [Status], retained, on [StatusTopic], and its [Presence] (also
// its Last Will) on [PresenceTopic]. Status is unsigned and advisory: [FleetStatus] reports a
// device whose topics hold a payload naming another device as invalid, and a broker ACL
// (docs/protocol.md) keeps one device from writing another's topics.
//
// Lifecycle: a [Device] session reconnects on its own until Close; received messages must be
// acknowledged (Message.Ack) once handled, so a crash before that gets them redelivered. An
// [Issuer] holds the history's lock and the fleet's trust store open until Close.
package sync
