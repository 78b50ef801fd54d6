package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// printOne prints the header and ev with a new printer.
func printOne(t *testing.T, f Format, d *decoder, columns []int, width int, ev Event) *bytes.Buffer {
	t.Helper()
	var out bytes.Buffer
	p, err := newPrinter(&out, f, d, columns, width)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	if err := p.print(ev); err != nil {
		t.Fatal(err)
	}
	return &out
}

func TestPrinters(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 40, Members: []btf.Member{
		{Name: "timestamp", Type: typedef("gadget_timestamp", u64T), Offset: 0},
		{Name: "pid", Type: typedef("gadget_pid", u32T), Offset: 64},
		{Name: "ok", Type: boolT, Offset: 96},
		{Name: "comm", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 16}, Offset: 128},
		{Name: "ids", Type: &btf.Array{Type: s16T, Index: u32T, Nelems: 2}, Offset: 256},
		{Name: "path", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 4}, Offset: 288},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Date(2026, 12, 3, 17, 22, 1, 120000000, time.UTC)
	ev := Event{
		{Name: "timestamp", Tag: "gadget_timestamp", Value: ts},
		{Name: "pid", Tag: "gadget_pid", Value: uint32(1)},
		{Name: "ok", Value: true},
		{Name: "comm", Value: `say "hi"`},
		{Name: "ids", Value: []any{int16(-1), int16(2)}},
		{Name: "path", Value: "/a"},
	}

	for _, tc := range []struct {
		format Format
		want   string
	}{
		{FormatColumns, "" +
			"TIMESTAMP                      PID        OK    COMM            IDS                              PATH\n" +
			"2026-12-03T17:22:01.120000000Z 1          true  say \"hi\"        [-1 2]                           /a\n"},
		{FormatJSON, `{"timestamp":"2026-12-03T17:22:01.120000000Z","pid":1,"ok":true,"comm":"say \"hi\"","ids":[-1,2],"path":"/a"}` + "\n"},
	} {
		out := printOne(t, tc.format, d, []int{0, 1, 2, 3, 4, 5}, 0, ev)
		if out.String() != tc.want {
			t.Errorf("format %d printed\n%s\nwant\n%s", tc.format, out.String(), tc.want)
		}
		if tc.format == FormatJSON && !json.Valid(out.Bytes()) {
			t.Errorf("invalid JSON: %s", out.String())
		}
	}

	if _, err := newPrinter(nil, Format(7), d, nil, 0); err == nil || !strings.Contains(err.Error(), "unknown output format 7") {
		t.Errorf("format 7: got error %v", err)
	}
}

// TestColumnsFitWidth: with a terminal's width, text columns give way first,
// then integer columns; names stay whole, and only text is ever cut.
func TestColumnsFitWidth(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 72, Members: []btf.Member{
		{Name: "timestamp", Type: typedef("gadget_timestamp", u64T), Offset: 0},
		{Name: "pid", Type: typedef("gadget_pid", u32T), Offset: 64},
		{Name: "comm", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 16}, Offset: 96},
		{Name: "fname", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 40}, Offset: 224},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{
		{Name: "timestamp", Value: time.Date(2026, 12, 3, 17, 22, 1, 120000000, time.UTC)},
		{Name: "pid", Value: uint32(4242)},
		{Name: "comm", Value: "café"},
		{Name: "fname", Value: "/var/lib/bpfleet/images/blobs/sha256/0123456789abcdef"},
	}
	for _, tc := range []struct {
		width int
		want  string
	}{
		// Unlimited (a pipe): columns as wide as their types (a path's capped at
		// 32), the long path printed whole.
		{0, "" +
			"TIMESTAMP                      PID        COMM            FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242       café            /var/lib/bpfleet/images/blobs/sha256/0123456789abcdef\n"},
		// Wide enough for the columns: the last value is cut at the edge.
		{100, "" +
			"TIMESTAMP                      PID        COMM            FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242       café            /var/lib/bpfleet/images/blobs/sha256/0123…\n"},
		// 60: the text columns give way, the widest first; the time stays whole.
		{60, "" +
			"TIMESTAMP                      PID        COMM     FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242       café     /var/lib…\n"},
		// 52, as narrow as the line gets: the integer column narrows too, names
		// stay whole.
		{52, "" +
			"TIMESTAMP                      PID     COMM   FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242    café   /var/…\n"},
		// One less and the line cannot fit: nothing narrows or is cut, as piped.
		{51, "" +
			"TIMESTAMP                      PID        COMM            FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242       café            /var/lib/bpfleet/images/blobs/sha256/0123456789abcdef\n"},
	} {
		out := printOne(t, FormatColumns, d, []int{0, 1, 2, 3}, tc.width, ev)
		if out.String() != tc.want {
			t.Errorf("width %d printed\n%s\nwant\n%s", tc.width, out.String(), tc.want)
		}
		for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if n := utf8.RuneCountInString(line); tc.width >= 52 && n > tc.width {
				t.Errorf("width %d: line of %d characters: %q", tc.width, n, line)
			}
		}
	}
}

// TestColumnsTooWideToFit: trace_open's line is 116 characters with every
// column at its floor (the time and errno keep their widths), so on a
// narrower terminal it prints as piped, its path whole, rather than both
// wrapped and cut.
func TestColumnsTooWideToFit(t *testing.T) {
	g, err := parseGadget(loadSpec(t, gadgetELF(t, "trace_open")))
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{
		{Name: "timestamp", Value: time.Date(2026, 12, 3, 17, 22, 1, 120000000, time.UTC)},
		{Name: "pid", Value: uint32(4242)},
		{Name: "tid", Value: uint32(4243)},
		{Name: "uid", Value: uint32(0)},
		{Name: "gid", Value: uint32(0)},
		{Name: "comm", Value: "cat"},
		{Name: "fd", Value: int32(-1)},
		{Name: "error", Value: Errno(unix.ENOENT)},
		{Name: "flags", Value: uint32(0)},
		{Name: "mode", Value: uint32(0)},
		{Name: "fname", Value: "/etc/bpfleet/trust/state.cbor"},
	}
	columns := make([]int, len(ev))
	for i := range columns {
		columns[i] = i
	}
	const whole = "" +
		"TIMESTAMP                      PID        TID        UID        GID        COMM            FD          ERROR           FLAGS      MODE       FNAME\n" +
		"2026-12-03T17:22:01.120000000Z 4242       4243       0          0          cat             -1          ENOENT          0          0          /etc/bpfleet/trust/state.cbor\n"
	for _, tc := range []struct {
		width int
		want  string
	}{
		// 116 is the line with every column at its floor: it still fits.
		{116, "" +
			"TIMESTAMP                      PID     TID     UID     GID     COMM   FD      ERROR           FLAGS   MODE    FNAME\n" +
			"2026-12-03T17:22:01.120000000Z 4242    4243    0       0       cat    -1      ENOENT          0       0       /etc/…\n"},
		{115, whole},
		{80, whole},
		{60, whole},
	} {
		if out := printOne(t, FormatColumns, g.decoder, columns, tc.width, ev); out.String() != tc.want {
			t.Errorf("width %d printed\n%s\nwant\n%s", tc.width, out.String(), tc.want)
		}
	}
}

func TestFieldsAndFilters(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 64, Members: []btf.Member{
		{Name: "pid", Type: typedef("gadget_pid", u32T), Offset: 0},
		{Name: "error", Type: typedef("gadget_errno", s32T), Offset: 32},
		{Name: "comm", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 16}, Offset: 64},
		{Name: "dst", Type: l4EndpointT, Offset: 192},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	v, err := newView(d, []string{"dst", "pid"}, []Filter{{"error", "ENOENT"}, {"comm", "cat"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{3, 0}; !slices.Equal(v.columns, want) {
		t.Errorf("columns %v, want %v", v.columns, want)
	}
	ev := Event{
		{Name: "pid", Value: uint32(7)},
		{Name: "error", Value: Errno(unix.ENOENT)},
		{Name: "comm", Value: "cat"},
		{Name: "dst", Value: netip.MustParseAddrPort("[::1]:443")},
	}
	if !v.match(ev) {
		t.Errorf("%v does not match error=ENOENT, comm=cat", ev)
	}
	for i, other := range []any{Errno(unix.EACCES), "cats"} {
		changed := slices.Clone(ev)
		changed[i+1].Value = other
		if v.match(changed) {
			t.Errorf("%v matches error=ENOENT, comm=cat", changed)
		}
	}

	for _, tc := range []struct {
		format Format
		want   string
	}{
		{FormatColumns, "DST                   PID\n[::1]:443             7\n"},
		{FormatJSON, `{"dst":"[::1]:443","pid":7}` + "\n"},
	} {
		if out := printOne(t, tc.format, d, v.columns, 0, ev); out.String() != tc.want {
			t.Errorf("format %d printed\n%q\nwant\n%q", tc.format, out.String(), tc.want)
		}
	}

	for _, tc := range []struct {
		fields  []string
		filters []Filter
		want    string
	}{
		{[]string{"pid", "nope"}, nil, `fields: no field "nope" (the gadget's fields are pid, error, comm, dst)`},
		{[]string{"pid", "pid"}, nil, `fields: "pid" is listed twice`},
		{nil, []Filter{{"dport", "80"}}, `filter dport=80: no field "dport"`},
	} {
		if _, err := newView(d, tc.fields, tc.filters); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fields %v, filters %v: got error %v, want %q", tc.fields, tc.filters, err, tc.want)
		}
	}
}

// TestFilterValues: a filter value some event could print as is taken; one
// no event ever prints as is refused, naming the field, its type and what it
// prints as.
func TestFilterValues(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 104, Members: []btf.Member{
		{Name: "pid", Type: typedef("gadget_pid", u32T), Offset: 0},
		{Name: "fd", Type: s32T, Offset: 32},
		{Name: "error", Type: typedef("gadget_errno", s32T), Offset: 64},
		{Name: "sig", Type: typedef("gadget_signal", u32T), Offset: 96},
		{Name: "ok", Type: boolT, Offset: 128},
		{Name: "state", Type: stateT, Offset: 160},
		{Name: "comm", Type: &btf.Array{Type: charT, Index: u32T, Nelems: 16}, Offset: 192},
		{Name: "dst", Type: l4EndpointT, Offset: 320},
		{Name: "peer", Type: l3EndpointT, Offset: 480},
		{Name: "timestamp", Type: typedef("gadget_timestamp", u64T), Offset: 640},
		{Name: "nr", Type: typedef("gadget_syscall", s64T), Offset: 704},
		{Name: "counts", Type: &btf.Array{Type: u32T, Index: u32T, Nelems: 2}, Offset: 768},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	const (
		errno   = "field error is an errno (gadget_errno), printed as its name (such as ENOENT), 0, or the number of an errno without a name"
		signal  = "field sig is a signal (gadget_signal), printed as its name (such as SIGTERM) or the number of a signal without a name"
		uint32s = "field pid is a uint32, printed in decimal from 0 to 4294967295"
		enum    = "field state is enum state, printed as one of its names (STATE_OK, STATE_FAILED) or the number of a value without one"
	)
	for _, tc := range []struct {
		field, value string
		want         string // the error after "filter field=value: "; "" if taken
	}{
		{"pid", "4242", ""},
		{"pid", "0", ""},
		{"pid", "-1", uint32s},
		{"pid", "4294967296", uint32s},
		{"pid", "0x10", uint32s},
		{"pid", "007", uint32s},
		{"pid", "+7", uint32s},
		{"fd", "-1", ""},
		{"fd", "2147483648", "field fd is an int32, printed in decimal from -2147483648 to 2147483647"},
		{"error", "ENOENT", ""},
		{"error", "0", ""},
		{"error", "4095", ""}, // no name: prints as its number
		{"error", "ENOENTX", errno},
		{"error", "enoent", errno},
		{"error", "2", errno + ": 2 prints as ENOENT"},
		{"error", "-2", errno + ": -2 prints as ENOENT"},
		{"sig", "SIGKILL", ""},
		{"sig", "200", ""},
		{"sig", "KILL", signal},
		{"sig", "9", signal + ": 9 prints as SIGKILL"},
		{"ok", "true", ""},
		{"ok", "false", ""},
		{"ok", "1", "field ok is a bool, printed as true or false"},
		{"state", "STATE_FAILED", ""},
		{"state", "7", ""},
		{"state", "STATE_GONE", enum},
		{"state", "0", enum + ": 0 prints as STATE_OK"},
		{"comm", "cat", ""},
		{"comm", "", ""},
		{"comm", "a-command-of-16c", "field comm is text of at most 15 bytes without NUL"},
		{"dst", "127.0.0.1:443", ""},
		{"dst", "[::1]:443", ""},
		{"dst", "", ""},
		{"dst", "127.0.0.1", `field dst is an address and port (gadget_l4endpoint), printed as 127.0.0.1:443 or [::1]:443, or as "" for none`},
		{"peer", "::1", ""},
		{"peer", "0:0::1", `field peer is an address (gadget_l3endpoint), printed as 127.0.0.1 or ::1, or as "" for none`},
		{"peer", "localhost", `field peer is an address (gadget_l3endpoint), printed as 127.0.0.1 or ::1, or as "" for none`},
		{"timestamp", "2026-12-03T17:22:01.120000000Z", ""},
		{"timestamp", "2026-12-03T17:22:01.12Z", "field timestamp is a timestamp (gadget_timestamp), printed in UTC with nanoseconds, as 1970-01-01T00:00:00.000000000Z"},
		{"nr", "openat", ""},
		{"nr", "-1", ""},
		{"nr", "no_such_call", "field nr is a system call (gadget_syscall), printed as its name on this architecture (such as openat) or the number of one without a name"},
		{"counts", "[1 2]", ""}, // arrays of numbers are not checked
	} {
		_, err := newView(d, nil, []Filter{{tc.field, tc.value}})
		want := ""
		if tc.want != "" {
			want = "filter " + tc.field + "=" + tc.value + ": " + tc.want
		}
		if got := fmt.Sprint(err); err == nil && want != "" || err != nil && got != want {
			t.Errorf("filter %s=%s: error %v, want %q", tc.field, tc.value, err, want)
		}
	}
}

func TestParseFilter(t *testing.T) {
	for in, want := range map[string]Filter{
		"comm=cat":       {"comm", "cat"},
		"fname=/a=b":     {"fname", "/a=b"},
		"comm=":          {"comm", ""},
		"dst=[::1]:8080": {"dst", "[::1]:8080"},
	} {
		if got, err := ParseFilter(in); err != nil || got != want {
			t.Errorf("ParseFilter(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"comm", "=cat", ""} {
		if _, err := ParseFilter(in); err == nil || !strings.Contains(err.Error(), "want field=value") {
			t.Errorf("ParseFilter(%q): got error %v", in, err)
		}
	}
}

// A map iterator's JSON rows carry their round's time, in UTC with
// nanoseconds, as their first member; the columns format heads the round.
func TestPrintRounds(t *testing.T) {
	d, err := newDecoder(&btf.Struct{Name: "row", Size: 4, Members: []btf.Member{{Name: "pid", Type: u32T}}})
	if err != nil {
		t.Fatal(err)
	}
	ev := Event{{Name: "pid", Value: uint32(7)}}
	at := time.Date(2026, 12, 3, 18, 22, 1, 5, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		format Format
		want   string
	}{
		{FormatJSON, `{"round":"2026-12-03T17:22:01.000000005Z","pid":7}` + "\n" +
			`{"round":"2026-12-03T17:22:02.000000005Z","pid":7}` + "\n"},
		{FormatColumns, "--- 2026-12-03T17:22:01Z: 1 row\nPID\n7\n--- 2026-12-03T17:22:02Z: 1 row\nPID\n7\n"},
	} {
		var out bytes.Buffer
		p, err := newPrinter(&out, tc.format, d, []int{0}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if err := p.round(at.Add(time.Duration(i)*time.Second), 1); err != nil {
				t.Fatal(err)
			}
			if err := p.print(ev); err != nil {
				t.Fatal(err)
			}
		}
		if out.String() != tc.want {
			t.Errorf("format %d printed\n%s\nwant\n%s", tc.format, out.String(), tc.want)
		}
	}
}
