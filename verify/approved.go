package verify

// Approved is a gadget that passed verification: the eBPF program bytes it carries, and its
// btfgen layer if it has one, are exactly the bytes whose digest chain (layer -> manifest ->
// index) a trusted signature covers. Only this package creates one, so the runner can take
// nothing else.
type Approved struct {
	ref      string
	digest   string
	program  []byte
	btfgen   []byte
	metadata []byte
	decision Decision
}

// Ref is the image reference the gadget was resolved from.
func (a *Approved) Ref() string { return a.ref }

// Digest is the verified image index digest, "sha256:<hex>".
func (a *Approved) Digest() string { return a.digest }

// Program returns the verified eBPF ELF object. Callers must not modify it.
func (a *Approved) Program() []byte { return a.program }

// BTFGen returns the image's btfgen layer (Inspektor Gadget's
// application/vnd.gadget.btfgen.v1+binary: a tar.gz of BTF minimized for the program, one file per
// kernel), or nil when the image has none. The runner takes CO-RE types from it on kernels without
// BTF. Callers must not modify it.
func (a *Approved) BTFGen() []byte { return a.btfgen }

// Metadata returns the image's gadget metadata (Inspektor Gadget's gadget.yaml, the manifest's
// config blob), as verified with the rest; nil when the image's config is empty. The runner
// takes parameter descriptions from it. Callers must not modify it.
func (a *Approved) Metadata() []byte { return a.metadata }

// Decision explains why the gadget was approved.
func (a *Approved) Decision() Decision { return a.decision }
