// Command binsize shows what a Go binary's size is made of: it sums the sizes of the ELF
// symbols (functions, their data, type metadata and strings, as `go tool nm -size` lists them)
// by the module that provides them (from the binary's build info), the standard library being
// split by its top-level package, and prints the biggest contributors. The binary must keep
// its symbol table (built without -ldflags=-s); `make cross` builds one for arm64 to run this.
//
//	binsize [-n 10] binary
//
// Sizes are in MB (10⁶ bytes); zero-filled data (.bss) is not counted. Symbols account for
// most, not all, of the file: the pclntab, the ELF headers, DWARF (when kept) and the symbol
// tables themselves are not attributed.
package main

import (
	"cmp"
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
)

func main() {
	n := flag.Int("n", 10, "how many contributors to list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: binsize [-n 10] binary")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *n); err != nil {
		fmt.Fprintln(os.Stderr, "binsize:", err)
		os.Exit(1)
	}
}

func run(path string, n int) error {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return err
	}
	mods := []string{info.Main.Path}
	for _, d := range info.Deps {
		mods = append(mods, d.Path)
	}
	// Longest module path first, so that nested modules win.
	slices.SortFunc(mods, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%s: %w (build it without -ldflags=-s)", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	sizes := map[string]uint64{}
	var total uint64
	for _, s := range syms {
		// Only what the file holds: not .bss/.noptrbss (FIPS's 32 MB DRBG buffer is there).
		if s.Size == 0 || s.Section == elf.SHN_UNDEF || int(s.Section) >= len(f.Sections) || f.Sections[s.Section].Type == elf.SHT_NOBITS {
			continue
		}
		sizes[owner(s.Name, mods)] += s.Size
		total += s.Size
	}
	keys := make([]string, 0, len(sizes))
	for k := range sizes {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(sizes[b], sizes[a]), cmp.Compare(a, b)) })
	fmt.Printf("%s: %.1f MB file, %.1f MB in symbols; the %d biggest contributors:\n", path, float64(st.Size())/1e6, float64(total)/1e6, min(n, len(keys)))
	fmt.Printf("  %-52s %8s %6s\n", "module (std: top-level package)", "MB", "share")
	for _, k := range keys[:min(n, len(keys))] {
		fmt.Printf("  %-52s %8.2f %5.1f%%\n", k, float64(sizes[k])/1e6, 100*float64(sizes[k])/float64(total))
	}
	var secs []string
	for _, sec := range f.Sections {
		if sec.Type != elf.SHT_NOBITS && sec.Size >= 100_000 {
			secs = append(secs, fmt.Sprintf("%s %.1f", sec.Name, float64(sec.Size)/1e6))
		}
	}
	fmt.Printf("  sections over 0.1 MB (MB): %s\n", strings.Join(secs, ", "))
	return nil
}

// strip removes the linker's prefixes from a symbol that names a package's type or itab.
func strip(name string) string {
	for _, p := range []string{"type:", "go:itab.", "go:info.", "go:cuinfo."} {
		name = strings.TrimPrefix(name, p)
	}
	return strings.TrimLeft(name, "*")
}

// pkgOf returns the import path of the package a Go symbol belongs to, or a bracketed
// category for linker-made symbols that belong to none. (An import path whose last element
// has a dot, like gopkg.in/yaml.v3, is cut at that dot; owner matches modules first.)
func pkgOf(name string) string {
	name = strip(name)
	if strings.HasPrefix(name, "go:") || strings.HasPrefix(name, "runtime.") && strings.Contains(name, "·") {
		return "(linker: strings, tables)"
	}
	if i := strings.IndexAny(name, "[("); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndexByte(name, '/')
	dot := strings.IndexByte(name[slash+1:], '.')
	if dot < 0 {
		if slash < 0 {
			return "(linker: strings, tables)"
		}
		return name
	}
	return name[:slash+1+dot]
}

// owner maps a symbol to the module that provides it (mods, longest first), or to
// "std: <top-level package>".
func owner(sym string, mods []string) string {
	name := strip(sym)
	for _, m := range mods {
		if strings.HasPrefix(name, m+".") || strings.HasPrefix(name, m+"/") {
			return m
		}
	}
	pkg := pkgOf(sym)
	if strings.HasPrefix(pkg, "(") {
		return pkg
	}
	if pkg == "main" {
		return "main"
	}
	first, _, _ := strings.Cut(pkg, "/")
	if strings.Contains(first, ".") {
		return pkg // a package of no listed module (vendored or replaced)
	}
	return "std: " + first
}
