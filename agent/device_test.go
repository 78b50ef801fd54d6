package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust/store"
)

// storeImage tags in the data directory's image store an image index with one linux/amd64
// manifest whose layer is program (no ELF needed: nothing here loads it), and returns the
// index descriptor.
func storeImage(t *testing.T, dataDir, ref, program string) oci.Descriptor {
	t.Helper()
	l, err := oci.Open(imageDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	write := func(mediaType string, v any) oci.Descriptor {
		data, ok := v.([]byte)
		if !ok {
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		d, err := l.WriteBlob(mediaType, data)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer := write(oci.MediaTypeEBPFProgram, []byte(program))
	layer.Annotations = map[string]string{oci.AnnotationTitle: "program.o"}
	m := write(oci.MediaTypeManifest, oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeManifest,
		Config: write(oci.MediaTypeGadgetConfig, []byte("name: x\n")), Layers: []oci.Descriptor{layer}})
	m.Platform = &oci.Platform{OS: "linux", Architecture: "amd64"}
	idx := write(oci.MediaTypeIndex, oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeIndex, Manifests: []oci.Descriptor{m}})
	if err := l.Tag(ref, idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

type deviceOp struct {
	name string
	run  func(dataDir string) error
}

// readOnly is every command that only reads the data directory (run's approval writes only
// the audit record of a break-glass override, which none of these directories holds).
var readOnly = []deviceOp{
	{"image list", func(d string) error { _, err := Images(d); return err }},
	{"image inspect", func(d string) error { _, err := InspectImage(d, "x"); return err }},
	{"image export", func(d string) error {
		return ExportImages(d, filepath.Join(os.TempDir(), fmt.Sprintf("bpfleet-export-%d.tar", os.Getpid())), "x")
	}},
	{"verify", func(d string) error { _, err := Verify(d, "x", nil); return err }},
	{"verify --key", func(d string) error { _, err := Verify(d, "x", []string{"k.pub"}); return err }},
	{"run", func(d string) error { _, err := ApproveRun(d, "x"); return err }},
	{"trust status", func(d string) error { _, err := TrustStatus(d, time.Now()); return err }},
	{"trust audit", func(d string) error { _, err := AuditLog(d); return err }},
}

// TestCommandsRefuseMissingDataDir: every command but import (and the agent) refuses a data
// directory that does not exist, naming it, and creates nothing.
func TestCommandsRefuseMissingDataDir(t *testing.T) {
	ops := append(slices.Clone(readOnly),
		deviceOp{"image tag", func(d string) error { _, _, err := TagImage(d, "x", "y"); return err }},
		deviceOp{"image remove", func(d string) error { _, _, err := RemoveImage(d, "x"); return err }})
	parent := t.TempDir()
	file := filepath.Join(parent, "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	dirs := []struct{ dir, want string }{
		{filepath.Join(parent, "nonexist"), "data directory " + filepath.Join(parent, "nonexist") +
			" does not exist (is --data-dir right? `bpfleet image import` and the agent create it)"},
		{file, "data directory " + file + " is not a directory (is --data-dir right?)"},
		// An existing directory that is not a device's (a mistyped --data-dir such as /tmp).
		{empty, empty + " is not a bpfleet data directory: it has neither images/ nor trust/ " +
			"(is --data-dir right? `bpfleet image import` and the agent create them)"},
	}
	for _, op := range ops {
		for _, d := range dirs {
			t.Run(op.name+"/"+filepath.Base(d.dir), func(t *testing.T) {
				before := tree(t, parent)
				if err := op.run(d.dir); err == nil || err.Error() != d.want {
					t.Fatalf("%s on %s: %v\nwant %s", op.name, d.dir, err, d.want)
				}
				if after := tree(t, parent); !maps.Equal(after, before) {
					t.Fatalf("%s changed %s:\n%v\nwas\n%v", op.name, parent, after, before)
				}
			})
		}
	}
	// A source that is not there creates nothing.
	typo := filepath.Join(parent, "typo")
	if _, err := ImportImage(typo, filepath.Join(parent, "no-such.tar")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("import of a missing source: %v", err)
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Errorf("import of a missing source created %s (%v)", typo, err)
	}
	// Importing may create it: a fresh device imports its images before the agent first runs.
	src := t.TempDir()
	storeImage(t, src, "x:latest", "program")
	fresh := filepath.Join(parent, "fresh")
	if _, err := ImportImage(fresh, imageDir(src)); err != nil {
		t.Fatalf("import into a new data directory: %v", err)
	}
	if images, err := Images(fresh); err != nil || len(images) != 1 || images[0].Ref != "x:latest" {
		t.Fatalf("after import: %+v, %v", images, err)
	}
}

// tree maps every path under dir to its type and, for files, contents.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		v := d.Type().String()
		if d.Type().IsRegular() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			v += " " + string(data)
		}
		m[strings.TrimPrefix(path, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestReadOnlyHalfDevice: on a device that has only one of its two stores — images imported
// before its agent first ran, or trust with no image imported yet — the read-only commands
// answer from what there is and create the other store no more than anything else: the
// directory is byte for byte what it was.
func TestReadOnlyHalfDevice(t *testing.T) {
	imagesOnly := t.TempDir()
	storeImage(t, imagesOnly, "x:latest", "program")
	trustOnly := t.TempDir()
	s, err := store.Open(trustDir(trustOnly), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	noTrust := `verify x: no trusted keys (no trust received yet: the agent has applied no delta to ` + imagesOnly + `)`
	noImages := "not found: no images imported into " + trustOnly + " yet"
	want := map[string][2]string{ // error on imagesOnly, on trustOnly ("" for none)
		"image list":    {"", ""},
		"image inspect": {"", noImages},
		"image export":  {"", noImages},
		"verify":        {noTrust, noImages},
		"verify --key":  {"open k.pub: no such file or directory", noImages},
		"run":           {noTrust, noImages},
		"trust status":  {"", ""},
		"trust audit":   {"", ""},
	}
	for _, op := range readOnly {
		for i, dir := range []string{imagesOnly, trustOnly} {
			t.Run(op.name+"/"+[]string{"images-only", "trust-only"}[i], func(t *testing.T) {
				// Opening Badger rewrites its own files, so the trust-only device's trust/ is
				// compared only where no command writes: outside trust/.
				before := tree(t, dir)
				err := op.run(dir)
				if got := fmt.Sprint(err); err == nil && want[op.name][i] != "" || err != nil && got != want[op.name][i] {
					t.Errorf("%s: %v, want %q", op.name, err, want[op.name][i])
				}
				after := tree(t, dir)
				if i == 1 {
					maps.DeleteFunc(before, func(k string, _ string) bool { return strings.HasPrefix(k, "/trust/") })
					maps.DeleteFunc(after, func(k string, _ string) bool { return strings.HasPrefix(k, "/trust/") })
				}
				if !maps.Equal(after, before) {
					t.Errorf("%s changed %s:\n%v\nwas\n%v", op.name, dir, slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
				}
			})
		}
	}
	if images, err := Images(trustOnly); err != nil || len(images) != 0 {
		t.Errorf("image list with no images/: %v, %v; want none", images, err)
	}
	st, err := TrustStatus(imagesOnly, time.Now())
	if want := (TrustState{StateDigest: store.Empty().StateDigest()}); err != nil || st != want {
		t.Errorf("trust status with no trust/: %+v, %v; want %+v", st, err, want)
	}
	// The empty state is what a new store holds.
	if fresh, err := TrustStatus(trustOnly, time.Now()); err != nil || fresh != st {
		t.Errorf("trust status of a new store: %+v, %v; want %+v", fresh, err, st)
	}
}

// TestTrustStatusFreshness: trust status says whether the trust is stale as verify would judge
// it at the same time — past its expiry to the second, never with an unknown clock — and omits
// an expiry no delta ever set.
func TestTrustStatusFreshness(t *testing.T) {
	const expires = 1_800_000_000 // 2027-01-15T08:00:00Z
	dataDir := t.TempDir()
	s, err := store.Open(trustDir(dataDir), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := s.Apply(store.Change{Version: 1, Base: store.Empty().StateDigest(), Expires: expires})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(expires, 0)
	tests := []struct {
		name  string
		now   time.Time
		stale bool
	}{
		{"fresh", at.Add(-2 * time.Hour), false},
		{"the last second", at.Add(999 * time.Millisecond), false},
		{"stale", at.Add(time.Second), true},
		{"stale, clock unknown", time.Unix(expires+3600, 0).AddDate(-50, 0, 0), false}, // 1977: before 2025
	}
	for _, tt := range tests {
		st, err := TrustStatus(dataDir, tt.now)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(st)
		want := `{"version":1,"state_digest":"` + digest + `","expires":"2027-01-15T08:00:00Z","stale":` + fmt.Sprint(tt.stale) +
			`,"keys":0,"signatures":0,"revocations":0,"policy":false}`
		if string(got) != want {
			t.Errorf("%s: trust status -o json =\n%s\nwant\n%s", tt.name, got, want)
		}
	}
	// A device that never received trust: no expiry, not stale.
	imagesOnly := t.TempDir()
	storeImage(t, imagesOnly, "x:latest", "program")
	st, err := TrustStatus(imagesOnly, at)
	got, _ := json.Marshal(st)
	if want := `{"version":0,"state_digest":"` + store.Empty().StateDigest() + `","stale":false,"keys":0,"signatures":0,"revocations":0,"policy":false}`; err != nil || string(got) != want {
		t.Errorf("never received trust: %s, %v\nwant %s", got, err, want)
	}
}

// TestJSONOutputs: what the CLI prints with -o json: empty lists are [], keys are snake_case.
func TestJSONOutputs(t *testing.T) {
	dataDir := t.TempDir()
	if _, err := oci.Open(imageDir(dataDir)); err != nil { // a device with an empty image store and no trust store
		t.Fatal(err)
	}
	marshal := func(v any, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	if got := marshal(Images(dataDir)); got != "[]" {
		t.Errorf("image list of an empty store = %s, want []", got)
	}
	if got := marshal(AuditLog(dataDir)); got != "[]" {
		t.Errorf("trust audit of an empty log = %s, want []", got)
	}

	idx := storeImage(t, dataDir, "trace_exec:latest", "program")
	l, _ := oci.Open(imageDir(dataDir))
	m, _ := l.ReadIndex(idx)
	manifest, _ := l.ReadManifest(m.Manifests[0])
	layer := manifest.Layers[0]
	tests := []struct{ name, got, want string }{
		{"image list", marshal(Images(dataDir)),
			`[{"ref":"trace_exec:latest","digest":"` + idx.Digest + `","media_type":"` + oci.MediaTypeIndex + `","size":` + jsonInt(idx.Size) + `}]`},
		{"image inspect", marshal(InspectImage(dataDir, "trace_exec")),
			`{"ref":"trace_exec","digest":"` + idx.Digest + `","media_type":"` + oci.MediaTypeIndex + `","platforms":[{"platform":"linux/amd64","manifest":"` + m.Manifests[0].Digest +
				`","layers":[{"media_type":"` + oci.MediaTypeEBPFProgram + `","digest":"` + layer.Digest + `","size":7,"annotations":{"` + oci.AnnotationTitle + `":"program.o"}}]}],"legacy_signatures":0,"referrers":0}`},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s -o json =\n%s\nwant\n%s", tt.name, tt.got, tt.want)
		}
	}
}

func jsonInt(n int64) string { data, _ := json.Marshal(n); return string(data) }

// TestTagImage: tagging refuses helper tags and says when it moves a tag; a refusal changes
// nothing.
func TestTagImage(t *testing.T) {
	dataDir := t.TempDir()
	a := storeImage(t, dataDir, "a:latest", "program a")
	b := storeImage(t, dataDir, "b:latest", "program b")
	sigTag := "sha256-" + strings.TrimPrefix(a.Digest, "sha256:") + ".sig"
	tests := []struct {
		src, dst             string
		wantDigest, wantPrev string
		wantErr              string
	}{
		{src: "a", dst: "c:v1", wantDigest: a.Digest},
		{src: "a", dst: "c:v1", wantDigest: a.Digest, wantPrev: a.Digest}, // again: not a move
		{src: "b", dst: "c:v1", wantDigest: b.Digest, wantPrev: a.Digest}, // moved
		{src: b.Digest[:19], dst: "d", wantDigest: b.Digest},
		{src: "a@" + a.Digest, dst: "e", wantDigest: a.Digest},
		{src: "b", dst: sigTag, wantErr: `invalid tag "` + sigTag + `": tags of the form sha256-<digest>, .sig, .att or .sbom are reserved for signatures, attestations and referrers`},
		{src: "b", dst: "ghcr.io/acme/a:" + strings.TrimSuffix(sigTag, ".sig") + ".att", wantErr: "are reserved for signatures"},
		{src: "b", dst: "c@" + a.Digest, wantErr: "a tag has no @"},
		{src: "nosuch", dst: "f", wantErr: `image "nosuch": not found`},
	}
	for _, tt := range tests {
		indexBefore, _ := os.ReadFile(filepath.Join(imageDir(dataDir), "index.json"))
		digest, prev, err := TagImage(dataDir, tt.src, tt.dst)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("TagImage(%s, %s) = %v, want %q", tt.src, tt.dst, err, tt.wantErr)
			}
			if after, _ := os.ReadFile(filepath.Join(imageDir(dataDir), "index.json")); string(after) != string(indexBefore) {
				t.Errorf("a refused TagImage(%s, %s) changed index.json", tt.src, tt.dst)
			}
			continue
		}
		if err != nil || digest != tt.wantDigest || prev != tt.wantPrev {
			t.Errorf("TagImage(%s, %s) = %s, %s, %v; want %s, %s", tt.src, tt.dst, digest, prev, err, tt.wantDigest, tt.wantPrev)
		}
	}
	images, _ := Images(dataDir)
	var refs []string
	for _, img := range images {
		refs = append(refs, img.Ref+" "+img.Digest)
	}
	if want := []string{"a:latest " + a.Digest, "b:latest " + b.Digest, "c:v1 " + b.Digest, "d " + b.Digest, "e " + a.Digest}; !slices.Equal(refs, want) {
		t.Errorf("images after tagging: %q, want %q", refs, want)
	}
}
