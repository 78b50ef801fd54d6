package verify

// Approved is a gadget that passed verification: the eBPF program bytes it carries are exactly
// the bytes whose digest chain (layer -> manifest -> index) a trusted signature covers. Only this
// package creates one, so the runner can take nothing else.
type Approved struct {
	ref      string
	digest   string
	program  []byte
	decision Decision
}

// Ref is the image reference the gadget was resolved from.
func (a *Approved) Ref() string { return a.ref }

// Digest is the verified image index digest, "sha256:<hex>".
func (a *Approved) Digest() string { return a.digest }

// Program returns the verified eBPF ELF object. Callers must not modify it.
func (a *Approved) Program() []byte { return a.program }

// Decision explains why the gadget was approved.
func (a *Approved) Decision() Decision { return a.decision }
