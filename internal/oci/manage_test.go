package oci

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func blobCount(t *testing.T, l *Layout) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(l.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestExportImportRemove(t *testing.T) {
	src := newGadgetLayout(t, "ghcr.io/acme/a:v1", "ghcr.io/acme/b:v1")
	for _, dst := range []string{filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "out.tar")} {
		if err := src.Export(dst, "ghcr.io/acme/a:v1"); err != nil {
			t.Fatal(err)
		}
		dev, err := Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dev.Import(dst); err != nil {
			t.Fatalf("import of the export %s: %v", dst, err)
		}
		checkComplete(t, dev, "ghcr.io/acme/a:v1")
		if _, err := dev.Lookup("ghcr.io/acme/b:v1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("b:v1 was exported too: %v", err)
		}
	}

	// A second tag keeps the image; removing the last one deletes its blobs, and only its.
	a, _ := src.Lookup("ghcr.io/acme/a:v1")
	if err := src.Tag("alias:v1", a); err != nil {
		t.Fatal(err)
	}
	before := blobCount(t, src)
	if n, err := src.Remove("ghcr.io/acme/a:v1"); err != nil || n != 0 {
		t.Fatalf("remove with another tag left: %d blobs deleted, %v", n, err)
	}
	n, err := src.Remove("alias:v1")
	if err != nil || n == 0 {
		t.Fatalf("remove last tag: %d blobs deleted, %v", n, err)
	}
	if blobCount(t, src) != before-n {
		t.Fatal("blob count does not add up")
	}
	checkComplete(t, src, "ghcr.io/acme/b:v1")
	if _, err := src.Remove("ghcr.io/acme/a:v1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
}
