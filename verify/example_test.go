package verify_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"

	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/verify"
)

// Ad-hoc verification with a cosign.pub file, as `bpfleet run --key cosign.pub` does.
func ExampleGadgetWithKeys() {
	images, err := oci.Open("/var/lib/bpfleet/images")
	if err != nil {
		fmt.Println(err)
		return
	}
	pemBytes, err := os.ReadFile("cosign.pub")
	if err != nil {
		fmt.Println(err)
		return
	}
	pub, err := cosign.LoadPublicKey(pemBytes)
	if err != nil {
		fmt.Println(err)
		return
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		fmt.Println(err)
		return
	}
	gadget, err := verify.GadgetWithKeys([]trust.Key{{DER: der}}, images, "trace_open")
	if err != nil {
		fmt.Println(err) // e.g. "verify trace_open: unsigned: no signature for sha256:..."
		return
	}
	why, _ := json.Marshal(gadget.Decision())
	fmt.Printf("running %s (%d bytes of eBPF): %s\n", gadget.Digest(), len(gadget.Program()), why)
}
