package firmware

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cavaliergopher/cpio"
)

// entry is one file, directory, symlink or device node of the archive, by absolute path.
type entry struct {
	mode         cpio.FileMode // type and permission bits
	data         []byte        // file contents, or a symlink's target
	major, minor int           // device numbers of a character device
}

// archive collects entries by path and writes them sorted, with their parent directories.
type archive struct {
	entries map[string]entry
	epoch   time.Time
}

func newArchive(epoch time.Time) *archive {
	return &archive{entries: map[string]entry{}, epoch: epoch}
}

func (a *archive) add(p string, e entry) error {
	p = path.Clean("/" + p)
	if p == "/" {
		return nil
	}
	if old, ok := a.entries[p]; ok {
		if old.mode.IsDir() && e.mode.IsDir() {
			return nil
		}
		return fmt.Errorf("firmware: %s added twice", p)
	}
	a.entries[p] = e
	return a.dir(path.Dir(p))
}

func (a *archive) dir(p string) error { return a.add(p, entry{mode: cpio.TypeDir | 0o755}) }

func (a *archive) file(p string, data []byte, perm cpio.FileMode) error {
	return a.add(p, entry{mode: cpio.TypeReg | perm, data: data})
}

func (a *archive) symlink(p, target string) error {
	return a.add(p, entry{mode: cpio.TypeSymlink | 0o777, data: []byte(target)})
}

func (a *archive) charDev(p string, perm cpio.FileMode, major, minor int) error {
	return a.add(p, entry{mode: cpio.TypeChar | perm, major: major, minor: minor})
}

// writeTo writes the archive as newc cpio: entries sorted by path (a directory before what
// it holds), inode numbers in that order, owner root, one fixed modification time.
func (a *archive) writeTo(w io.Writer) error {
	paths := make([]string, 0, len(a.entries))
	for p := range a.entries {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	cw := cpio.NewWriter(w)
	for i, p := range paths {
		e := a.entries[p]
		name := strings.TrimPrefix(p, "/")
		ino := int64(i + 1)
		if e.mode&cpio.ModeType == cpio.TypeChar {
			// The library writes no device numbers: flush its padding and write this
			// (empty, hence self-aligned) header ourselves.
			if err := cw.Flush(); err != nil {
				return err
			}
			if err := writeDevHeader(w, name, ino, e, a.epoch); err != nil {
				return err
			}
			continue
		}
		links := 1
		if e.mode.IsDir() {
			links = 2
		}
		hdr := &cpio.Header{Name: name, Mode: e.mode, Size: int64(len(e.data)), ModTime: a.epoch, Inode: ino, Links: links}
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("firmware: cpio %s: %w", p, err)
		}
		if _, err := cw.Write(e.data); err != nil {
			return fmt.Errorf("firmware: cpio %s: %w", p, err)
		}
	}
	return cw.Close()
}

// writeDevHeader writes a newc header of a device node (no data).
func writeDevHeader(w io.Writer, name string, ino int64, e entry, mtime time.Time) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, uint32(e.mode), 0, 0, 1, max(mtime.Unix(), 0), 0, 0, 0, e.major, e.minor, len(name)+1, 0)
	b.WriteString(name)
	b.WriteByte(0)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	_, err := w.Write(b.Bytes())
	return err
}
