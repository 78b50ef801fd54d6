package main

import "testing"

func TestParseQEMU(t *testing.T) {
	out := `    testbed_test.go:325: amd64 timings (host clock from QEMU start): network up 8.345s (guest 4661 ms since kernel start), device reported trust (broker then stopped) 9.122s, guest read its trust status 9.326s, first event 10.322s (guest 6638 ms since kernel start), powered off 13.113s
    testbed_test.go:327: arm64 timings (host clock from QEMU start): network up 4.538s (guest 3776 ms since kernel start), device reported trust (broker then stopped) 5.374s, guest read its trust status 5.776s, first event 6.833s (guest 6071 ms since kernel start), powered off 9.423s
--- FAIL: TestScenario (23.50s)
    --- PASS: TestScenario/amd64 (22.68s)
    --- FAIL: TestScenario/arm64 (18.57s)
`
	rows := parseQEMU(out)
	a, b := rows["amd64"], rows["arm64"]
	if a.Value == nil || *a.Value != 10.322 || a.Result != "INFO" || a.Detail["first_event_guest_ms"] != "6638" || a.Detail["powered_off_host"] != "13.113s" {
		t.Errorf("amd64: %+v", a)
	}
	if b.Value == nil || *b.Value != 6.833 || b.Result != "FAIL" {
		t.Errorf("arm64: %+v", b)
	}
	if len(rows) != 2 {
		t.Errorf("%d rows", len(rows))
	}
}
