// Package store is the device's trust store: the keys, signatures, revocations, policy and
// Sigstore trusted root the fleet delivered, the version, expiry and state digest of the last
// delta applied, the current root, and device-local records outside the digest (break-glass
// overrides and their audit log). It is kept in an embedded Badger database with low-memory
// options and synced writes.
//
// Writers (package sync, through the agent) change trust state only with [Store.Apply] or
// [Store.ApplyChain], which validate first and then write every record and the new version in
// one Badger transaction: a change lands whole or not at all, and a rejected change leaves the
// store byte-for-byte as it was. Readers (package verify) take a [Snapshot], a consistent
// in-memory copy that implements trust.Reader, and need not hold the store open while they
// work.
//
// Lifecycle: Badger allows one process per directory, and the agent and the local CLI share it.
// [Open] takes an exclusive lock file first and waits (up to [Options.LockWait]) for the other
// process to let go, so callers should hold a Store only as long as they need it and always
// Close it; an unclosed store keeps every other bpfleet process waiting.
package store
