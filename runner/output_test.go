package runner

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
)

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
		var out bytes.Buffer
		p, err := newPrinter(&out, tc.format, d)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.start(); err != nil {
			t.Fatal(err)
		}
		if err := p.print(ev); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("format %d printed\n%s\nwant\n%s", tc.format, out.String(), tc.want)
		}
		if tc.format == FormatJSON && !json.Valid(out.Bytes()) {
			t.Errorf("invalid JSON: %s", out.String())
		}
	}

	if _, err := newPrinter(nil, Format(7), d); err == nil || !strings.Contains(err.Error(), "unknown output format 7") {
		t.Errorf("format 7: got error %v", err)
	}
}
