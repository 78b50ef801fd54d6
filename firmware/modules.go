package firmware

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ResolveModules returns the files (relative to dir, a /lib/modules/<release> directory) of
// the named modules and everything they depend on, in an order that loads: every module after
// its dependencies, otherwise in the order named. Names match file names without .ko (and
// compression suffix), with - and _ the same, as modprobe treats them. dir must hold
// modules.dep (run depmod on an unpacked kernel package first).
func ResolveModules(dir string, names []string) ([]string, error) {
	deps, err := readModulesDep(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	byName := map[string]string{}
	for file := range deps {
		byName[moduleName(file)] = file
	}
	var order []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(file string) error
	visit = func(file string) error {
		switch state[file] {
		case 1:
			return fmt.Errorf("firmware: modules.dep has a cycle through %s", file)
		case 2:
			return nil
		}
		state[file] = 1
		for _, d := range deps[file] {
			if _, ok := deps[d]; !ok {
				return fmt.Errorf("firmware: %s depends on %s, which modules.dep does not list", file, d)
			}
			if err := visit(d); err != nil {
				return err
			}
		}
		state[file] = 2
		order = append(order, file)
		return nil
	}
	for _, n := range names {
		file, ok := byName[normalize(n)]
		if !ok {
			return nil, fmt.Errorf("firmware: module %s is not in %s (built in, or not in this kernel?)", n, dir)
		}
		if err := visit(file); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModulesDep parses modules.dep: "kernel/a.ko: kernel/b.ko kernel/c.ko" per line.
func readModulesDep(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("firmware: %w (run depmod -b ROOT RELEASE on the unpacked kernel)", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[strings.TrimSpace(mod)] = strings.Fields(rest)
	}
	return deps, sc.Err()
}

func moduleName(file string) string {
	base := filepath.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return normalize(base)
}

func normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }
