package cosign

import (
	"strings"
	"testing"
)

// FuzzParsePayload: whatever the bytes, ParsePayload must not panic, and anything it accepts
// binds exactly the wanted digest, with the cosign type, and without duplicate keys.
func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(fixturePayload))
	f.Add([]byte(strings.Replace(fixturePayload, `"optional":null`, `"optional":{"a":[1,{"b":null}]}`, 1)))
	f.Add([]byte(`{"critical":{},"critical":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParsePayload(raw, fixtureSignedDigest)
		if err != nil {
			return
		}
		if p.Digest != fixtureSignedDigest {
			t.Fatalf("accepted a payload for %q", p.Digest)
		}
		if checkDuplicateKeys(raw) != nil || !strings.Contains(string(raw), SignatureType) {
			t.Fatalf("accepted %q", raw)
		}
	})
}
