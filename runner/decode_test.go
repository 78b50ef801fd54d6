package runner

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

var (
	charT  = &btf.Int{Name: "char", Size: 1, Encoding: btf.Signed}
	boolT  = &btf.Int{Name: "_Bool", Size: 1, Encoding: btf.Bool}
	u8T    = &btf.Int{Name: "unsigned char", Size: 1}
	s16T   = &btf.Int{Name: "short", Size: 2, Encoding: btf.Signed}
	s32T   = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u32T   = &btf.Int{Name: "unsigned int", Size: 4}
	s64T   = &btf.Int{Name: "long long", Size: 8, Encoding: btf.Signed}
	u64T   = &btf.Int{Name: "unsigned long long", Size: 8}
	stateT = &btf.Enum{Name: "state", Size: 4, Signed: true, Values: []btf.EnumValue{
		{Name: "STATE_OK", Value: 0}, {Name: "STATE_FAILED", Value: uint64(1<<64 - 1)}, // -1
	}}
)

func typedef(name string, typ btf.Type) *btf.Typedef { return &btf.Typedef{Name: name, Type: typ} }

// testEvent exercises every kind of member the decoder supports.
var testEvent = &btf.Struct{Name: "event", Size: 96, Members: []btf.Member{
	{Name: "timestamp", Type: typedef("gadget_timestamp", typedef("__u64", u64T)), Offset: 0},
	{Name: "pid", Type: typedef("gadget_pid", typedef("__u32", u32T)), Offset: 64},
	{Name: "delta", Type: s16T, Offset: 96},
	{Name: "ok", Type: boolT, Offset: 112},
	{Name: "flags", Type: &btf.Volatile{Type: u8T}, Offset: 120},
	{Name: "state", Type: stateT, Offset: 128},
	{Name: "other_state", Type: stateT, Offset: 160},
	{Name: "comm", Type: &btf.Array{Type: typedef("gadget_comm", charT), Index: u32T, Nelems: 16}, Offset: 192},
	{Name: "tag", Type: &btf.Array{Type: &btf.Const{Type: charT}, Index: u32T, Nelems: 4}, Offset: 320},
	{Name: "proc", Offset: 352, Type: &btf.Struct{Name: "proc", Size: 8, Members: []btf.Member{
		{Name: "uid", Type: typedef("gadget_uid", u32T), Offset: 0},
		{Name: "nice", Type: s16T, Offset: 32},
		// 2 bytes of padding
	}}},
	{Name: "", Offset: 416, Type: &btf.Struct{Size: 4, Members: []btf.Member{
		{Name: "inline", Type: s32T, Offset: 0},
	}}},
	// 4 bytes of padding
	{Name: "counts", Type: &btf.Array{Type: u32T, Index: u32T, Nelems: 3}, Offset: 480},
	// 4 bytes of padding
	{Name: "total", Type: s64T, Offset: 576},
	{Name: "bytes", Type: u64T, Offset: 640},
	{Name: "addr", Type: &btf.Array{Type: u8T, Index: u32T, Nelems: 4}, Offset: 704},
}}

func TestDecode(t *testing.T) {
	d, err := newDecoder(testEvent)
	if err != nil {
		t.Fatal(err)
	}

	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &now); err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	raw := make([]byte, testEvent.Size)
	for i := range raw {
		raw[i] = 0xAA // padding must not leak into any value
	}
	ne.PutUint64(raw[0:], uint64(now.Nano()))
	ne.PutUint32(raw[8:], 4242)
	ne.PutUint16(raw[12:], uint16(0xFFFE)) // -2
	raw[14] = 1
	raw[15] = 0x81
	ne.PutUint32(raw[16:], 0xFFFFFFFF) // -1
	ne.PutUint32(raw[20:], 7)
	copy(raw[24:40], "bash\x00garbage\x00\x00\x00")
	copy(raw[40:44], "abcd") // fills the array: no NUL
	ne.PutUint32(raw[44:], 1000)
	ne.PutUint16(raw[48:], uint16(0xFFEC))     // -20
	ne.PutUint32(raw[52:], uint32(0xFFFFFF85)) // -123
	ne.PutUint32(raw[60:], 1)
	ne.PutUint32(raw[64:], 2)
	ne.PutUint32(raw[68:], 3)
	ne.PutUint64(raw[72:], uint64(0xFFFFFFFFFFFFFFFF)) // -1
	ne.PutUint64(raw[80:], 1<<63)
	copy(raw[88:92], []byte{10, 0, 0, 1})

	ev, err := d.decode(raw)
	if err != nil {
		t.Fatal(err)
	}

	ts, ok := ev[0].Value.(time.Time)
	if !ok {
		t.Fatalf("timestamp decoded as %T, want time.Time", ev[0].Value)
	}
	// bootTime is measured once, so the wall clock's slewing since (NTP) can put "now" a little
	// in the future: tens of microseconds were seen.
	if since := time.Since(ts); since < -100*time.Millisecond || since > time.Second || ts.Location() != time.UTC {
		t.Errorf("timestamp of now decoded as %v (%v ago), want within a second of now, in UTC", ts, since)
	}
	want := Event{
		{Name: "timestamp", Tag: "gadget_timestamp", Value: ts},
		{Name: "pid", Tag: "gadget_pid", Value: uint32(4242)},
		{Name: "delta", Value: int16(-2)},
		{Name: "ok", Value: true},
		{Name: "flags", Value: uint8(0x81)},
		{Name: "state", Value: "STATE_FAILED"},
		{Name: "other_state", Value: "7"},
		{Name: "comm", Tag: "gadget_comm", Value: "bash"},
		{Name: "tag", Value: "abcd"},
		{Name: "proc.uid", Tag: "gadget_uid", Value: uint32(1000)},
		{Name: "proc.nice", Value: int16(-20)},
		{Name: "inline", Value: int32(-123)},
		{Name: "counts", Value: []any{uint32(1), uint32(2), uint32(3)}},
		{Name: "total", Value: int64(-1)},
		{Name: "bytes", Value: uint64(1 << 63)},
		{Name: "addr", Value: []any{uint8(10), uint8(0), uint8(0), uint8(1)}},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("decoded\n%#v\nwant\n%#v", ev, want)
	}
	if v, ok := ev.Value("proc.uid"); !ok || v != uint32(1000) {
		t.Errorf(`Value("proc.uid") = %v, %v; want 1000, true`, v, ok)
	}
	if _, ok := ev.Value("uid"); ok {
		t.Error(`Value("uid") found a field; nested fields are only known by their dotted name`)
	}

	if _, err := d.decode(raw[:len(raw)-1]); err == nil || !strings.Contains(err.Error(), "95 bytes, want 96") {
		t.Errorf("short event: got error %v, want one about its size", err)
	}
}

func TestDecoderRefuses(t *testing.T) {
	member := func(typ btf.Type) *btf.Struct {
		return &btf.Struct{Name: "event", Size: 16, Members: []btf.Member{{Name: "f", Type: typ}}}
	}
	for _, tc := range []struct {
		name  string
		event *btf.Struct
		want  string
	}{
		{"pointer", member(&btf.Pointer{Target: u32T}), "field f: unsupported type"},
		{"union", member(&btf.Union{Size: 4, Members: []btf.Member{{Name: "a", Type: u32T}}}), "field f: unsupported type"},
		{"int128", member(&btf.Int{Name: "__int128", Size: 16, Encoding: btf.Signed}), "unsupported 16-byte integer"},
		{"short timestamp", member(typedef("gadget_timestamp", u32T)), "gadget_timestamp must be a 64-bit unsigned integer"},
		{"array of structs", member(&btf.Array{Type: &btf.Struct{Size: 4}, Index: u32T, Nelems: 2}), "field f: array element: unsupported type"},
		{"bitfield", &btf.Struct{Name: "event", Size: 4, Members: []btf.Member{{Name: "f", Type: u32T, BitfieldSize: 3}}}, "field f: bitfields"},
		{"overrun", &btf.Struct{Name: "event", Size: 4, Members: []btf.Member{{Name: "f", Type: u64T}}}, "overrun the 4-byte struct"},
		{"empty", &btf.Struct{Name: "event", Size: 0}, "has no fields"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newDecoder(tc.event)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestBootTime(t *testing.T) {
	var up unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &up); err != nil {
		t.Fatal(err)
	}
	uptime := time.Duration(up.Nano())
	if got := time.Since(bootTime()); got < uptime-time.Second || got > uptime+time.Second {
		t.Errorf("boot time %v is %v ago, want about %v (CLOCK_BOOTTIME)", bootTime(), got, uptime)
	}
}

// The endpoint structs as gadgets/include/gadget/types.h declares them.
var (
	addrT       = &btf.Array{Type: u8T, Index: u32T, Nelems: 16}
	l3EndpointT = &btf.Struct{Name: "gadget_l3endpoint", Size: 20, Members: []btf.Member{
		{Name: "addr", Type: addrT, Offset: 0},
		{Name: "version", Type: u8T, Offset: 128},
		{Name: "pad", Type: &btf.Array{Type: u8T, Index: u32T, Nelems: 3}, Offset: 136},
	}}
	l4EndpointT = &btf.Struct{Name: "gadget_l4endpoint", Size: 20, Members: []btf.Member{
		{Name: "addr", Type: addrT, Offset: 0},
		{Name: "port", Type: &btf.Int{Name: "unsigned short", Size: 2}, Offset: 128},
		{Name: "version", Type: u8T, Offset: 144},
		{Name: "proto", Type: u8T, Offset: 152},
	}}
)

func TestDecodeNamedValues(t *testing.T) {
	event := &btf.Struct{Name: "event", Size: 80, Members: []btf.Member{
		{Name: "error", Type: typedef("gadget_errno", s32T), Offset: 0},
		{Name: "ret", Type: typedef("gadget_errno", s64T), Offset: 64},
		{Name: "sig", Type: typedef("gadget_signal", u32T), Offset: 128},
		{Name: "src", Type: l4EndpointT, Offset: 160},
		{Name: "dst", Type: l4EndpointT, Offset: 320},
		{Name: "peer", Type: l3EndpointT, Offset: 480},
	}}
	d, err := newDecoder(event)
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	raw := make([]byte, event.Size)
	ne.PutUint32(raw[0:], uint32(unix.ENOENT))
	ne.PutUint64(raw[8:], ^uint64(unix.EACCES)+1) // -EACCES, as a syscall returns it
	ne.PutUint32(raw[16:], uint32(unix.SIGUSR1))
	copy(raw[20:], []byte{127, 0, 0, 1})
	ne.PutUint16(raw[36:], 43210)
	raw[38], raw[39] = 4, unix.IPPROTO_TCP
	copy(raw[40:], netip.MustParseAddr("2001:db8::7").AsSlice())
	ne.PutUint16(raw[56:], 443)
	raw[58] = 6
	// peer: version 0, no address.

	ev, err := d.decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{
		{Name: "error", Tag: "gadget_errno", Value: Errno(unix.ENOENT)},
		{Name: "ret", Tag: "gadget_errno", Value: Errno(unix.EACCES)},
		{Name: "sig", Tag: "gadget_signal", Value: Signal(unix.SIGUSR1)},
		{Name: "src", Tag: "gadget_l4endpoint", Value: netip.MustParseAddrPort("127.0.0.1:43210")},
		{Name: "dst", Tag: "gadget_l4endpoint", Value: netip.MustParseAddrPort("[2001:db8::7]:443")},
		{Name: "peer", Tag: "gadget_l3endpoint", Value: netip.Addr{}},
	}
	if !reflect.DeepEqual(ev, want) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", ev, want)
	}
	var printed []string
	for _, f := range ev {
		printed = append(printed, formatValue(f.Value))
	}
	if got, want := strings.Join(printed, " "), "ENOENT EACCES SIGUSR1 127.0.0.1:43210 [2001:db8::7]:443 "; got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
	for v, want := range map[fmt.Stringer]string{
		Errno(0): "0", Errno(4095): "4095", Signal(9): "SIGKILL", Signal(200): "200",
	} {
		if got := v.String(); got != want {
			t.Errorf("%T(%d) prints as %q, want %q", v, v, got, want)
		}
	}

	broken := &btf.Struct{Name: "gadget_l4endpoint", Size: 16, Members: []btf.Member{{Name: "addr", Type: addrT}}}
	_, err = newDecoder(&btf.Struct{Name: "event", Size: 16, Members: []btf.Member{{Name: "dst", Type: broken}}})
	if err == nil || !strings.Contains(err.Error(), "field dst: struct gadget_l4endpoint has no member version") {
		t.Errorf("endpoint without version: got error %v", err)
	}
	_, err = newDecoder(&btf.Struct{Name: "event", Size: 4, Members: []btf.Member{{Name: "e", Type: typedef("gadget_errno", boolT)}}})
	if err == nil || !strings.Contains(err.Error(), "gadget_errno must be an integer") {
		t.Errorf("bool errno: got error %v", err)
	}
}
