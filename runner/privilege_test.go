package runner

import "testing"

func TestPrivilegeRefusal(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   string
	}{
		{"Name:\tbpfleet\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n", ""}, // root
		{"CapEff:\t0000000000200000\n", ""},                                            // CAP_SYS_ADMIN alone
		{"CapEff:\t000000c000000000\n", ""},                                            // CAP_BPF + CAP_PERFMON
		{"CapEff:\t0000008000000000\n", "running gadgets needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), and this process has CAP_BPF but not CAP_PERFMON"},
		{"CapEff:\t0000000000000000\n", "running gadgets needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), and this process has neither"},
	} {
		caps, err := parseCapEff([]byte(tc.status))
		if err != nil {
			t.Fatalf("%q: %v", tc.status, err)
		}
		if got := privilegeRefusal(caps); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.status, got, tc.want)
		}
	}
	if _, err := parseCapEff([]byte("Name:\tx\n")); err == nil {
		t.Error("a status without CapEff parsed")
	}
	// This test process: root in CI, so nothing to refuse.
	if caps, err := effectiveCapabilities(); err != nil || (caps&(1<<capSysAdmin) != 0 && privilegeRefusal(caps) != "") {
		t.Errorf("own capabilities %x: %v", caps, err)
	}
}
