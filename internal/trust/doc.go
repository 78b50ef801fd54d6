// Package trust names what a device trusts: gadget public keys ([Key]) and detached gadget
// signatures ([Signature]), and the read-only view of them that verification works from
// ([Reader]). It holds types only; package trust/store keeps them on disk. Keeping the two apart
// means that verification depends on nothing that can reach the network or write the store.
package trust
