package runner

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Capability bits (linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// effectiveCapabilities reads this process's effective capability set.
func effectiveCapabilities() (uint64, error) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return parseCapEff(status)
}

// parseCapEff finds the CapEff line of a /proc/<pid>/status.
func parseCapEff(status []byte) (uint64, error) {
	for line := range bytes.Lines(status) {
		if hex, ok := bytes.CutPrefix(line, []byte("CapEff:")); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(hex)), 16, 64)
		}
	}
	return 0, fmt.Errorf("no CapEff line in /proc/self/status")
}

// privilegeRefusal says why a process with the effective capabilities caps
// cannot load gadgets, or "" if it has what loading takes: CAP_BPF and
// CAP_PERFMON (Linux 5.8+), or CAP_SYS_ADMIN, which covers both.
func privilegeRefusal(caps uint64) string {
	has := func(c int) bool { return caps&(1<<c) != 0 }
	if has(capSysAdmin) || has(capBPF) && has(capPerfmon) {
		return ""
	}
	return "running gadgets needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), and this process has " +
		map[bool]string{true: "CAP_BPF but not CAP_PERFMON", false: "neither"}[has(capBPF)]
}
