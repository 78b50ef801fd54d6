// Package store is the device's trust store: the public keys the fleet trusts for gadget
// signatures, the signatures delivered for image digests, and the version and state digest of
// the last trust delta applied. It is kept in an embedded Badger database under the data
// directory.
//
// Writers (package sync, through the agent) change the store only with [Store.Apply], which
// validates first and then writes every record and the new version in one Badger transaction:
// a change lands whole or not at all, and a rejected change leaves the store byte-for-byte as it
// was. Readers (package verify) take a [Snapshot], a consistent in-memory copy that implements
// trust.Reader, and need not hold
// the store open while they work.
//
// Lifecycle: Badger allows one process per directory, and the agent and the local CLI share it.
// [Open] takes an exclusive lock file first and waits (up to [Options.LockWait]) for the other
// process to let go, so callers should hold a Store only as long as they need it and always
// Close it; an unclosed store keeps every other bpfleet process waiting.
package store
