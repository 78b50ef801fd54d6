package runner

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tracefsDir is where the kernel documents tracefs; cilium/ebpf looks there (and under
// debugfs) to find a tracepoint's event ID.
const tracefsDir = "/sys/kernel/tracing"

// ensureTracefs mounts tracefs at its standard place when neither it nor debugfs is mounted,
// as on devices whose minimal init mounts only proc and sys. Distributions mount it at boot;
// mounting it here changes nothing else and is what attaching a tracepoint needs.
func ensureTracefs() error {
	if isFS("/sys/kernel/tracing", unix.TRACEFS_MAGIC) || isFS("/sys/kernel/debug/tracing", unix.TRACEFS_MAGIC) ||
		isFS("/sys/kernel/debug", unix.DEBUGFS_MAGIC) {
		return nil
	}
	if _, err := os.Stat(tracefsDir); err != nil {
		return fmt.Errorf("tracepoints need tracefs, and %s is missing: %w", tracefsDir, err)
	}
	if err := unix.Mount("tracefs", tracefsDir, "tracefs", 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("tracepoints need tracefs: mount it at %s: %w", tracefsDir, err)
	}
	return nil
}

func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && int64(st.Type) == magic
}
