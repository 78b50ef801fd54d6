package cosign

import (
	"errors"
	"strings"
	"testing"
)

func TestNewPayloadMatchesCosign(t *testing.T) {
	got, err := NewPayload(fixtureSignedDigest, "ttl.sh/signed_with_cosign_legacy")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != fixturePayload {
		t.Errorf("NewPayload =\n%s\nwant cosign's\n%s", got, fixturePayload)
	}
	if _, err := NewPayload("sha256:abc", "x"); err == nil {
		t.Error("NewPayload accepted a malformed digest")
	}
}

func TestParsePayload(t *testing.T) {
	const d = fixtureSignedDigest
	other := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name    string
		payload string
		want    error // nil: accepted
	}{
		{name: "cosign payload", payload: fixturePayload},
		{name: "optional annotations", payload: `{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"},"optional":{"a":"b","A":"c"}}`},
		{name: "no optional", payload: `{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"}}`},
		{name: "another digest", want: ErrWrongDigest, payload: strings.Replace(fixturePayload, d, other, 1)},
		{name: "duplicate digest key", want: ErrPayload, payload: `{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"` + other + `","docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"},"optional":null}`},
		{name: "duplicate critical", want: ErrPayload, payload: `{"critical":{},` + fixturePayload[1:]},
		{name: "duplicate key in optional", want: ErrPayload, payload: strings.Replace(fixturePayload, `"optional":null`, `"optional":{"a":1,"a":2}`, 1)},
		{name: "key in other case", want: ErrPayload, payload: strings.Replace(fixturePayload, `"type"`, `"Type"`, 1)},
		{name: "wrong type", want: ErrPayload, payload: strings.Replace(fixturePayload, "cosign container image signature", "atomic container signature", 1)},
		{name: "unknown critical key", want: ErrPayload, payload: strings.Replace(fixturePayload, `"type":`, `"extra":1,"type":`, 1)},
		{name: "unknown top-level key", want: ErrPayload, payload: strings.Replace(fixturePayload, `"optional":null`, `"optional":null,"x":1`, 1)},
		{name: "missing identity", want: ErrPayload, payload: `{"critical":{"image":{"docker-manifest-digest":"` + d + `"},"type":"cosign container image signature"}}`},
		{name: "digest not a string", want: ErrPayload, payload: strings.Replace(fixturePayload, `"`+d+`"`, `1`, 1)},
		{name: "uppercase digest", want: ErrPayload, payload: strings.Replace(fixturePayload, d, strings.ToUpper(d), 1)},
		{name: "trailing data", want: ErrPayload, payload: fixturePayload + `{}`},
		{name: "array", want: ErrPayload, payload: `[` + fixturePayload + `]`},
		{name: "truncated", want: ErrPayload, payload: fixturePayload[:100]},
		{name: "too deep", want: ErrPayload, payload: strings.Replace(fixturePayload, `"optional":null`, `"optional":{"a":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`, 1)},
		{name: "too big", want: ErrPayload, payload: strings.Replace(fixturePayload, `"optional":null`, `"optional":{"a":"`+strings.Repeat("x", MaxPayloadSize)+`"}`, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePayload([]byte(tt.payload), d)
			if tt.want == nil {
				if err != nil || p.Digest != d || p.DockerReference == "" {
					t.Fatalf("ParsePayload = %+v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("ParsePayload = %+v, %v; want %v", p, err, tt.want)
			}
		})
	}
	p, err := ParsePayload([]byte(fixturePayload), d)
	if err != nil || p.DockerReference != "ttl.sh/signed_with_cosign_legacy" || p.Optional != nil {
		t.Errorf("fixture payload parsed as %+v, %v", p, err)
	}
}
