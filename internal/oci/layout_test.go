package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOpenCreatesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(dir, "oci-layout"))); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	if got := string(readFile(t, filepath.Join(dir, "index.json"))); got != `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}` {
		t.Errorf("index.json = %s", got)
	}
	if fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256")); err != nil || !fi.IsDir() {
		t.Errorf("blobs/sha256 not created: %v", err)
	}
	// Reopening keeps the content.
	l, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if idx, err := l.Index(); err != nil || len(idx.Manifests) != 0 {
		t.Errorf("reopened index = %+v, %v", idx, err)
	}
}

func TestOpenRejectsUnknownLayoutVersion(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), `unsupported imageLayoutVersion "2.0.0"`) {
		t.Fatalf("Open = %v, want unsupported version error", err)
	}
}

func TestReadBlob(t *testing.T) {
	content := []byte("hello, blob")
	tests := []struct {
		name    string
		damage  func(t *testing.T, l *Layout, d Descriptor) Descriptor
		wantErr error
	}{
		{name: "intact", damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor { return d }},
		{name: "byte changed", wantErr: ErrBlobMismatch, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			flipByte(t, l, d.Digest, 3)
			return d
		}},
		{name: "truncated", wantErr: ErrBlobMismatch, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			h, _ := DigestHex(d.Digest)
			os.WriteFile(l.blobPath(h), content[:4], 0o644)
			return d
		}},
		{name: "grown", wantErr: ErrBlobMismatch, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			h, _ := DigestHex(d.Digest)
			os.WriteFile(l.blobPath(h), append(content, '!'), 0o644)
			return d
		}},
		{name: "descriptor size lies", wantErr: ErrBlobMismatch, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			d.Size--
			return d
		}},
		{name: "deleted", wantErr: ErrNotFound, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			h, _ := DigestHex(d.Digest)
			os.Remove(l.blobPath(h))
			return d
		}},
		{name: "replaced by a FIFO", wantErr: ErrBlobMismatch, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			h, _ := DigestHex(d.Digest)
			os.Remove(l.blobPath(h))
			if err := syscall.Mkfifo(l.blobPath(h), 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{name: "over the cap", wantErr: ErrTooLarge, damage: func(t *testing.T, l *Layout, d Descriptor) Descriptor {
			d.Size = MaxBlobSize + 1
			return d
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			d, err := l.WriteBlob("text/plain", content)
			if err != nil {
				t.Fatal(err)
			}
			if want := Digest(content); d.Digest != want || d.Size != int64(len(content)) || d.MediaType != "text/plain" {
				t.Fatalf("WriteBlob = %+v", d)
			}
			d = tt.damage(t, l, d)
			got, err := l.ReadBlob(d)
			if tt.wantErr == nil {
				if err != nil || string(got) != string(content) {
					t.Fatalf("ReadBlob = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Fatalf("ReadBlob = %q, %v; want %v", got, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), d.Digest) {
				t.Errorf("error %q does not name %s", err, d.Digest)
			}
		})
	}
}

func TestDigestHex(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	if h, err := DigestHex(good); err != nil || h != strings.Repeat("ab", 32) {
		t.Errorf("DigestHex(%s) = %q, %v", good, h, err)
	}
	for _, bad := range []string{"", "sha256:", "sha512:" + strings.Repeat("ab", 64), "sha256:" + strings.Repeat("AB", 32),
		"sha256:" + strings.Repeat("zz", 32), "sha256:../../../../etc/passwd", good + "00"} {
		if _, err := DigestHex(bad); err == nil {
			t.Errorf("DigestHex(%q) accepted", bad)
		}
	}
}

func TestTag(t *testing.T) {
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := l.WriteBlob(MediaTypeManifest, []byte(`{"a":1}`))
	b, _ := l.WriteBlob(MediaTypeManifest, []byte(`{"b":2}`))

	if err := l.Tag("img:1", a); err != nil {
		t.Fatal(err)
	}
	if err := l.Tag("img:1", b); err != nil { // repoint
		t.Fatal(err)
	}
	idx, _ := l.Index()
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != b.Digest || idx.Manifests[0].Annotations[AnnotationRefName] != "img:1" {
		t.Fatalf("after repoint index = %+v", idx.Manifests)
	}
	if a.Annotations != nil {
		t.Errorf("Tag modified the caller's descriptor: %v", a.Annotations)
	}

	if err := l.TagIfUnchanged("img:1", a.Digest, a); !errors.Is(err, ErrTagChanged) {
		t.Errorf("TagIfUnchanged with stale digest = %v, want ErrTagChanged", err)
	}
	if err := l.TagIfUnchanged("img:1", b.Digest, a); err != nil {
		t.Errorf("TagIfUnchanged with current digest = %v", err)
	}
	if err := l.TagIfUnchanged("img:2", "", a); err != nil {
		t.Errorf("TagIfUnchanged of a new tag = %v", err)
	}
	if err := l.TagIfUnchanged("img:3", a.Digest, a); !errors.Is(err, ErrTagChanged) {
		t.Errorf("TagIfUnchanged expecting a missing tag to exist = %v, want ErrTagChanged", err)
	}
	if got, err := l.Lookup("img:1"); err != nil || got.Digest != a.Digest {
		t.Errorf("Lookup(img:1) = %v, %v", got.Digest, err)
	}
	if _, err := l.Lookup("img:9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup(img:9) = %v, want ErrNotFound", err)
	}

	missing := Descriptor{MediaType: MediaTypeManifest, Digest: Digest([]byte("nope")), Size: 4}
	if err := l.Tag("img:4", missing); err == nil {
		t.Error("tagged a blob that is not in the layout")
	}
	if err := l.Tag("bad ref", a); err == nil {
		t.Error("accepted a reference with a space")
	}
}

func TestResolve(t *testing.T) {
	// d(n) is entry n's digest: two hex digits of n, then zeros, so short prefixes are unique;
	// d(0xee1) and d(0xee2) share the prefix "sha256:ee".
	d := func(n int) Descriptor {
		h := fmt.Sprintf("%03x", n)
		return Descriptor{MediaType: MediaTypeIndex, Digest: "sha256:" + h + strings.Repeat("0", 64-len(h)), Size: int64(n)}
	}
	tag := func(n int, ref string) Descriptor {
		x := d(n)
		x.Annotations = map[string]string{AnnotationRefName: ref}
		return x
	}
	helper := "sha256-" + strings.Repeat("0", 64) + ".sig"
	entries := []Descriptor{
		tag(1, "ghcr.io/acme/trace_open:latest"),
		tag(2, "ghcr.io/acme/trace_open:v1"),
		tag(3, "docker.io/other/trace_open:v2"),
		tag(4, "ghcr.io/acme/exec:latest"),
		tag(5, "quay.io/x/exec:latest"),
		tag(6, "localimg"),
		tag(7, helper),
		d(8),
		tag(9, "ghcr.io/acme/bpftop:v1"),
		tag(10, "ghcr.io/acme/snap:v1"),
		tag(11, "ghcr.io/acme/snap:v2"),
		tag(12, "trace_exec:latest"),
		tag(12, "acme/exec:v1"), // a second name of image 12
		tag(0xee1, "one"),
		tag(0xee2, "two"),
		// Tags an older store or a hand-edited index may hold, spelled as image 1's digest and
		// as image 4 pinned: they must never stand for those.
		tag(13, d(1).Digest),
		tag(14, "exec@"+d(4).Digest),
		tag(15, "solo/tool:latest"),
		tag(16, "solo/tool:v1"),
	}
	tests := []struct {
		ref     string
		want    int
		wantErr error
		// errText is part of the error's message.
		errText string
	}{
		{ref: "ghcr.io/acme/trace_open:v1", want: 2},
		{ref: d(1).Digest, want: 1}, // not the tag spelled like it (entry 13)
		{ref: "exec@" + d(4).Digest, want: 4},
		{ref: "ghcr.io/acme/trace_open", want: 1},
		// Two repositories end in trace_open: a short name without a tag names neither.
		{ref: "trace_open", wantErr: ErrAmbiguous, errText: "it names images of docker.io/other/trace_open, ghcr.io/acme/trace_open; give the repository"},
		{ref: "tool", want: 15}, // one repository: its :latest
		{ref: "tool:v1", want: 16},
		{ref: "trace_open:v2", want: 3},
		{ref: "trace_open:v3", wantErr: ErrNotFound},
		{ref: "exec", wantErr: ErrAmbiguous, errText: "ghcr.io/acme/exec, quay.io/x/exec"},
		{ref: "exec:latest", wantErr: ErrAmbiguous},
		{ref: "localimg", want: 6},
		{ref: "bpftop", want: 9},
		{ref: "snap", wantErr: ErrAmbiguous},
		{ref: helper, want: 7},
		{ref: helper[:20], wantErr: ErrNotFound},
		{ref: "acme/trace_open", wantErr: ErrNotFound},
		{ref: "", wantErr: ErrNotFound},

		// Digests, in full or as a prefix (`image list` shows 12 hex digits).
		{ref: d(8).Digest, want: 8},
		{ref: d(12).Digest, want: 12},
		{ref: d(12).Digest[:19], want: 12},
		{ref: "sha256:ee1", want: 0xee1},
		{ref: "sha256:ee", wantErr: ErrAmbiguous, errText: "matches " + d(0xee1).Digest + ", " + d(0xee2).Digest},
		{ref: "sha256:" + strings.Repeat("9", 64), wantErr: ErrNotFound, errText: "no image has this digest"},
		{ref: d(7).Digest, wantErr: ErrNotFound}, // a signature manifest is not an image
		{ref: "sha256:", wantErr: ErrNotFound, errText: "up to 64 lowercase hex digits"},
		{ref: "sha256:0EE1", wantErr: ErrNotFound, errText: "up to 64 lowercase hex digits"},

		// Pinned references: the digest selects, the name must be one of its tags.
		{ref: "trace_exec@" + d(12).Digest, want: 12},
		{ref: "trace_exec:latest@" + d(12).Digest, want: 12},
		{ref: "acme/exec:v1@" + d(12).Digest, want: 12},
		{ref: "acme/exec@" + d(12).Digest, want: 12}, // the repository, as docker reads NAME@DIGEST
		{ref: "ghcr.io/acme/trace_open@" + d(2).Digest, want: 2},
		{ref: "trace_open@" + d(3).Digest, want: 3},
		{ref: "trace_open:v1@" + d(2).Digest, want: 2},
		{ref: "exec@" + d(4).Digest, want: 4}, // the digest settles what the name alone leaves ambiguous
		{ref: "trace_exec@" + d(9).Digest, wantErr: ErrNotFound,
			errText: `image "trace_exec@` + d(9).Digest + `": not found: trace_exec points elsewhere: trace_exec:latest is ` + d(12).Digest},
		{ref: "nosuch@" + d(12).Digest, wantErr: ErrNotFound, errText: "nosuch is not a tag of " + d(12).Digest},
		{ref: "trace_exec@sha256:" + strings.Repeat("9", 64), wantErr: ErrNotFound,
			errText: "no image has digest sha256:" + strings.Repeat("9", 64) + ", and trace_exec:latest is " + d(12).Digest},
		{ref: "trace_exec@" + d(12).Digest[:19], wantErr: nil, errText: "want sha256:<64 lowercase hex>"},
		{ref: "@" + d(12).Digest, wantErr: ErrNotFound, errText: "no name before @"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, err := resolve(entries, tt.ref)
			if tt.wantErr != nil || tt.errText != "" {
				if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("resolve(%q) = %v, %v; want %v containing %q", tt.ref, got.Digest, err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil || got.Digest != d(tt.want).Digest {
				t.Fatalf("resolve(%q) = %v, %v; want entry %d", tt.ref, got.Digest, err, tt.want)
			}
		})
	}
}

func TestCheckImageTag(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for ref, want := range map[string]string{
		"trace_exec:v2":                       "",
		"ghcr.io/acme/trace_exec:latest":      "",
		"localhost:5000/g:sha256-abc":         "",
		"sha256-" + h + ".sig":                "reserved for signatures",
		"sha256-" + h + ".att":                "reserved for signatures",
		"sha256-" + h + ".sbom":               "reserved for signatures",
		"sha256-" + h:                         "reserved for signatures",
		"ghcr.io/acme/g:sha256-" + h + ".sig": "reserved for signatures",
		"sha256:" + h:                         "reads as a digest",
		"g@sha256:" + h:                       "a tag has no @",
		"bad ref":                             "spaces or control characters",
		"":                                    "empty",
		"/":                                   "want [registry/]path[:tag]",
		"x/":                                  "want [registry/]path[:tag]",
		":x":                                  "want [registry/]path[:tag]",
		"repo:x:y":                            "want [registry/]path[:tag]",
		"Upper/case:v1":                       "want [registry/]path[:tag]",
		"a//b:v1":                             "want [registry/]path[:tag]",
		"localhost:5000/acme/g:V1.2_3-rc":     "",
		"GHCR.IO/acme/x:v1":                   "want [registry/]path[:tag]",
		"ghcr.io//acme/x:v1":                  "want [registry/]path[:tag]",
	} {
		err := CheckImageTag(ref)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("CheckImageTag(%q) = %v, want %q", ref, err, want)
		}
	}
}

func TestList(t *testing.T) {
	l := newGadgetLayout(t, "ghcr.io/acme/b:v1", "ghcr.io/acme/a:latest")
	sig, _ := l.WriteBlob(MediaTypeManifest, []byte(`{"schemaVersion":2}`))
	a, _ := l.Lookup("ghcr.io/acme/a:latest")
	if err := l.Tag("sha256-"+strings.TrimPrefix(a.Digest, "sha256:")+".sig", sig); err != nil {
		t.Fatal(err)
	}
	if err := l.Tag("sha256-"+strings.TrimPrefix(a.Digest, "sha256:"), sig); err != nil {
		t.Fatal(err)
	}
	// An entry with its own created annotation wins over the image's.
	a.Annotations[AnnotationCreated] = "2001-01-01T00:00:00Z"
	if err := l.Tag("c", a); err != nil {
		t.Fatal(err)
	}

	got, err := l.List()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := l.Lookup("ghcr.io/acme/b:v1")
	want := []Image{
		{Ref: "c", Digest: a.Digest, MediaType: MediaTypeIndex, Size: a.Size, Created: "2001-01-01T00:00:00Z"},
		{Ref: "ghcr.io/acme/a:latest", Digest: a.Digest, MediaType: MediaTypeIndex, Size: a.Size, Created: "2025-10-20T12:00:00Z"},
		{Ref: "ghcr.io/acme/b:v1", Digest: b.Digest, MediaType: MediaTypeIndex, Size: b.Size, Created: "2025-10-20T12:00:00Z"},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("List =\n%s\nwant\n%s", gotJSON, wantJSON)
	}
	// The helper tags are still in the layout.
	idx, _ := l.Index()
	if len(idx.Manifests) != 5 {
		t.Errorf("index has %d entries, want 5", len(idx.Manifests))
	}
}

func TestRepository(t *testing.T) {
	for ref, want := range map[string]string{
		"trace_exec":                          "trace_exec",
		"trace_exec:latest":                   "trace_exec",
		"ghcr.io/acme/trace_exec:v1":          "ghcr.io/acme/trace_exec",
		"localhost:5000/trace_exec":           "localhost:5000/trace_exec",
		"localhost:5000/trace_exec:v2":        "localhost:5000/trace_exec",
		"ghcr.io/acme/g@sha256:0123456789abc": "ghcr.io/acme/g",
	} {
		if got := Repository(ref); got != want {
			t.Errorf("Repository(%q) = %q, want %q", ref, got, want)
		}
	}
}

func TestIsHelperTag(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for ref, want := range map[string]bool{
		"sha256-" + h + ".sig": true,
		"sha256-" + h:          true,
		"127.0.0.1:5000/acme/g:sha256-" + h + ".sig": true,
		"ghcr.io/acme/g:sha256-" + h + ".att":        true,
		"trace_exec:latest":                          false,
		"sha256-" + h[:60] + ".sig":                  false,
		"ghcr.io/acme/sha256-" + h + ":v1":           false,
	} {
		if got := IsHelperTag(ref); got != want {
			t.Errorf("IsHelperTag(%q) = %t, want %t", ref, got, want)
		}
	}
}
