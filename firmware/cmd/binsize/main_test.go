package main

import "testing"

func TestOwner(t *testing.T) {
	mods := []string{"github.com/sigstore/sigstore-go", "github.com/sigstore/sigstore", "github.com/bpfleet/bpfleet", "gopkg.in/yaml.v3"}
	for sym, want := range map[string]string{
		"github.com/sigstore/sigstore-go/pkg/verify.(*Verifier).Verify": "github.com/sigstore/sigstore-go",
		"github.com/sigstore/sigstore/pkg/signature.LoadVerifier":       "github.com/sigstore/sigstore",
		"type:*github.com/bpfleet/bpfleet/agent.Agent":                  "github.com/bpfleet/bpfleet",
		"crypto/internal/fips140/nistec.p256PrecomputedEmbed":           "std: crypto",
		"slices.SortFunc[go.shape.[]string,go.shape.string]":            "std: slices",
		"go:func.*": "(linker: strings, tables)",
		"main.main": "main",
		"vendor/golang.org/x/text/unicode/norm.decomps":                   "std: vendor",
		"gopkg.in/yaml.v3.(*parser).parse":                                "gopkg.in/yaml.v3",
		"go:itab.*github.com/bpfleet/bpfleet/sync.Device,io.Closer":       "github.com/bpfleet/bpfleet",
		"github.com/bpfleet/bpfleet/runner.program.attach.func1":          "github.com/bpfleet/bpfleet",
		"github.com/sigstore/sigstore-go/pkg/tuf.New[...].func2":          "github.com/sigstore/sigstore-go",
		"github.com/sigstore/sigstore-go/pkg/bundle.(*Bundle).MinVersion": "github.com/sigstore/sigstore-go",
	} {
		if got := owner(sym, mods); got != want {
			t.Errorf("%s: %q, want %q", sym, got, want)
		}
	}
}
