package cosign

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/bpfleet/bpfleet/internal/oci"
)

// Simple-signing constants, as cosign writes them.
const (
	MediaTypeSimpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
	AnnotationSignature    = "dev.cosignproject.cosign/signature"
	SignatureType          = "cosign container image signature"
	// MaxPayloadSize bounds a payload before it is hashed or parsed; cosign's are ~250 bytes.
	MaxPayloadSize = 64 << 10
	// maxDepth bounds JSON nesting in a payload (cosign's is 3 deep).
	maxDepth = 16
)

var (
	// ErrPayload: the payload is not a well-formed cosign simple-signing document.
	ErrPayload = errors.New("invalid simple-signing payload")
	// ErrWrongDigest: the payload is well formed but binds another image digest.
	ErrWrongDigest = errors.New("payload signs a different image digest")
)

// Payload is the parsed content of a simple-signing document.
type Payload struct {
	// DockerReference is critical.identity.docker-reference, the repository the signer named.
	// Neither cosign's nor IG's verifier checks it; it is informational here too.
	DockerReference string
	// Digest is critical.image.docker-manifest-digest.
	Digest string
	// Optional is the free-form "optional" object (nil when null or absent).
	Optional map[string]any
}

type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// NewPayload returns the simple-signing JSON binding digest, byte for byte what cosign signs
// for an image without annotations: {"critical":{...},"optional":null}.
func NewPayload(digest, dockerReference string) ([]byte, error) {
	if _, err := oci.DigestHex(digest); err != nil {
		return nil, fmt.Errorf("payload: invalid digest %q", digest)
	}
	var p simpleSigning
	p.Critical.Identity.DockerReference = dockerReference
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = SignatureType
	return json.Marshal(p)
}

// ParsePayload parses raw strictly and checks that it binds wantDigest exactly. Call it only
// after the signature over raw has been verified: the bytes are attacker-controlled until then.
//
// Strict means: one JSON object and nothing after it, no duplicate keys at any depth (decoders
// disagree on which duplicate wins), keys matched exactly (encoding/json would also accept
// "Type" for "type"), no unknown keys in "critical" or at the top level, and critical.type equal
// to SignatureType. Errors wrap ErrPayload, or ErrWrongDigest for a valid payload of another
// digest.
func ParsePayload(raw []byte, wantDigest string) (Payload, error) {
	p, err := parsePayload(raw)
	if err != nil {
		return Payload{}, fmt.Errorf("%w: %w", ErrPayload, err)
	}
	if p.Digest != wantDigest {
		return Payload{}, fmt.Errorf("%w: payload binds %q, want %q", ErrWrongDigest, p.Digest, wantDigest)
	}
	return p, nil
}

func parsePayload(raw []byte) (Payload, error) {
	if len(raw) > MaxPayloadSize {
		return Payload{}, fmt.Errorf("%d bytes (limit %d)", len(raw), MaxPayloadSize)
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return Payload{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return Payload{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return Payload{}, errors.New("data after the JSON object")
	}

	top, err := object(doc, "payload", "critical", "optional")
	if err != nil {
		return Payload{}, err
	}
	critical, err := object(top["critical"], "critical", "identity", "image", "type")
	if err != nil {
		return Payload{}, err
	}
	if typ, _ := critical["type"].(string); typ != SignatureType {
		return Payload{}, fmt.Errorf("critical.type is %v, want %q", critical["type"], SignatureType)
	}
	image, err := object(critical["image"], "critical.image", "docker-manifest-digest")
	if err != nil {
		return Payload{}, err
	}
	digest, ok := image["docker-manifest-digest"].(string)
	if _, err := oci.DigestHex(digest); !ok || err != nil {
		return Payload{}, fmt.Errorf("critical.image.docker-manifest-digest %v is not a sha256 digest", image["docker-manifest-digest"])
	}
	identity, err := object(critical["identity"], "critical.identity", "docker-reference")
	if err != nil {
		return Payload{}, err
	}
	ref, ok := identity["docker-reference"].(string)
	if !ok {
		return Payload{}, errors.New("critical.identity.docker-reference is not a string")
	}
	p := Payload{DockerReference: ref, Digest: digest}
	if opt, present := top["optional"]; present && opt != nil {
		if p.Optional, err = object(opt, "optional"); err != nil {
			return Payload{}, err
		}
	}
	return p, nil
}

// object asserts that v is a JSON object and, when keys are given, that it has no other keys.
// A missing key shows up as a nil value, which the caller's type assertion rejects.
func object(v any, name string, keys ...string) (map[string]any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is missing or not an object", name)
	}
	for k := range m {
		if len(keys) > 0 && !slices.Contains(keys, k) {
			return nil, fmt.Errorf("%s: unknown key %q", name, k)
		}
	}
	return m, nil
}

// checkDuplicateKeys walks the JSON token stream and rejects an object that repeats a key.
func checkDuplicateKeys(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return walkValue(dec, 0)
}

func walkValue(dec *json.Decoder, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	switch delim {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			key := tok.(string) // the decoder only yields string keys inside an object
			if seen[key] {
				return fmt.Errorf("duplicate key %q", key)
			}
			seen[key] = true
			if err := walkValue(dec, depth+1); err != nil {
				return err
			}
		}
	case '[':
		for dec.More() {
			if err := walkValue(dec, depth+1); err != nil {
				return err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return err
}
