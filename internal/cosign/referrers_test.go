package cosign

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// TestReadReferrersIGFixture reads the referrers of IG's fixture images: the OCI 1.1
// simple-signing referrer is only reachable through the referrers fallback tag; the bundle
// referrer is both an untagged index.json entry and listed by the fallback tag (found once);
// the notation referrers are untagged entries, one without artifactType (its type is its
// config media type).
func TestReadReferrersIGFixture(t *testing.T) {
	l, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Import(filepath.Join(fixtureDir(t), "oci-layout")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		image, artifactType, manifest string
		signatures, bundles           int
	}{
		{image: "sha256:2f096beb75baadce98f52500552f1d7eabf19f4c35007869350d6f496084e992", artifactType: ArtifactTypeSignature,
			manifest: "sha256:597cc6be74829b950036142f8b8ac8f14469658185ca3fb17e51eabcdb74c977", signatures: 1},
		{image: "sha256:d217fb2d81d4314d48ade41ad3cad13324861d296e4e786e6498f3123951709c", artifactType: ArtifactTypeBundle,
			manifest: "sha256:3dd951802bf189790e9a5cff9b269fd295896dbd3938f5518ec8f2e93c05fb57", bundles: 1},
		{image: "sha256:5dfde5fef803ccd1087cd3453d7c5825f51ed768274ba5d512539f6dfbbfd9b6", artifactType: ArtifactTypeNotation,
			manifest: "sha256:2e01ea603dcba42a8e07732db5c069300ba2028475aac3a925127f313bd06e86"},
		{image: "sha256:7418beed5ba60cb39d90e819b07c8ceb078a8dbedbdca53a8e9b01b3628fb988", artifactType: ArtifactTypeNotation,
			manifest: "sha256:698ea4c298a5365a4542ef288f13dd290ff8691848351fabc9c7cd9730e11dd7"},
	}
	for _, tt := range tests {
		refs, err := ReadReferrers(l, tt.image)
		if err != nil {
			t.Errorf("%s: %v", tt.image, err)
		}
		if len(refs) != 1 {
			t.Errorf("%s: %d referrers, want 1: %+v", tt.image, len(refs), refs)
			continue
		}
		r := refs[0]
		if r.ArtifactType != tt.artifactType || r.Manifest.Digest != tt.manifest || len(r.Signatures) != tt.signatures || len(r.Bundles) != tt.bundles {
			t.Errorf("%s: referrer %s %s with %d signatures, %d bundles", tt.image, r.Manifest.Digest, r.ArtifactType, len(r.Signatures), len(r.Bundles))
		}
	}
	// The oci11 referrer's payload is the simple-signing document binding that image.
	refs, _ := ReadReferrers(l, tests[0].image)
	if _, err := ParsePayload(refs[0].Signatures[0].Payload, tests[0].image); err != nil {
		t.Error(err)
	}
	// Images without referrers, and the legacy image whose signature is a `.sig` tag.
	for _, image := range []string{
		"sha256:f34a362f177727ed3f12eadc1f255ffe6a19190ab82d48df98c19f1bddc3b86a",
		fixtureSignedDigest,
	} {
		if refs, err := ReadReferrers(l, image); err != nil || len(refs) != 0 {
			t.Errorf("%s: %+v, %v; want none", image, refs, err)
		}
	}
	if _, err := ReadReferrers(l, "sha256:abc"); err == nil {
		t.Error("ReadReferrers accepted an invalid digest")
	}
}

func TestParseStatement(t *testing.T) {
	const want = "sha256:d217fb2d81d4314d48ade41ad3cad13324861d296e4e786e6498f3123951709c"
	h := strings.TrimPrefix(want, "sha256:")
	tests := []struct {
		name, raw string
		wantErr   error
	}{
		{name: "cosign v3", raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + h + `"}}],"predicateType":"https://sigstore.dev/cosign/sign/v1"}`},
		{name: "v0.1, second subject", raw: `{"_type":"https://in-toto.io/Statement/v0.1","subject":[{"name":"x","digest":{"sha256":"` + strings.Repeat("0", 64) + `"}},{"digest":{"sha512":"ab","sha256":"` + h + `"}}],"predicateType":"p"}`},
		{name: "other subject", wantErr: ErrWrongDigest, raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + strings.Repeat("0", 64) + `"}}]}`},
		{name: "upper-case hex is another digest", wantErr: ErrWrongDigest, raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + strings.ToUpper(h) + `"}}]}`},
		{name: "no sha256 subject", wantErr: ErrPayload, raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha512":"` + h + `"}}]}`},
		{name: "not a statement", wantErr: ErrPayload, raw: `{"_type":"https://example.com/Other","subject":[{"digest":{"sha256":"` + h + `"}}]}`},
		{name: "duplicate subject key", wantErr: ErrPayload, raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + strings.Repeat("0", 64) + `"}}],"subject":[{"digest":{"sha256":"` + h + `"}}]}`},
		{name: "trailing data", wantErr: ErrPayload, raw: `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + h + `"}}]} {}`},
		{name: "not JSON", wantErr: ErrPayload, raw: `{"_type":`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := ParseStatement([]byte(tt.raw), want)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseStatement = %+v, %v; want %v", st, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Subjects) == 0 || st.Type == "" {
				t.Errorf("statement %+v", st)
			}
		})
	}
}
