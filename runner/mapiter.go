package runner

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// DefaultInterval is how often a map iterator gadget's map is read when
// Options.Interval is 0.
const DefaultInterval = time.Second

// mapIter is a gadget_mapiter_<name>___<map> gadget: rows are the entries
// of a hash map, each printed as its key struct's fields followed by its
// value struct's fields, read and deleted every interval.
type mapIter struct {
	name    string
	mapName string
	// sortBy is the decoder field rows are sorted by, descending: the value
	// struct's first plain integer member; -1 if it has none.
	sortBy int
}

func parseMapIter(spec *ebpf.CollectionSpec, marker, rest string) (*gadget, error) {
	parts, err := markerParts(marker, rest, 2, 2, mapIterPrefix+"<name>___<map>")
	if err != nil {
		return nil, err
	}
	it := &mapIter{name: parts[0], mapName: parts[1]}
	m, ok := spec.Maps[it.mapName]
	if !ok {
		return nil, fmt.Errorf("map iterator %s: no map %q", it.name, it.mapName)
	}
	if m.Type != ebpf.Hash && m.Type != ebpf.LRUHash {
		return nil, fmt.Errorf("map iterator %s: map %s is of type %s, want Hash or LRUHash", it.name, it.mapName, m.Type)
	}
	key, kok := structType(m.Key)
	value, vok := structType(m.Value)
	if !kok || !vok {
		return nil, fmt.Errorf("map iterator %s: map %s must declare struct key and value types with __type(key, struct ...) and __type(value, struct ...)",
			it.name, it.mapName)
	}
	dec, keyFields, err := rowDecoder(key, value)
	if err != nil {
		return nil, fmt.Errorf("map iterator %s: %w", it.name, err)
	}
	it.sortBy = -1
	// The types of the decoded values tell which members are plain integers.
	zero, err := dec.decode(make([]byte, dec.size))
	if err != nil {
		return nil, fmt.Errorf("map iterator %s: %w", it.name, err)
	}
	for i := keyFields; i < len(zero); i++ {
		if isInteger(zero[i].Value) {
			it.sortBy = i
			break
		}
	}

	plan, err := planAttach(spec)
	if err != nil {
		return nil, err
	}
	for _, p := range plan {
		if p.kind == attachIter {
			return nil, fmt.Errorf("map iterator %s: program %s (section %s) is a BPF iterator, which only snapshotters use",
				it.name, p.name, p.section)
		}
	}
	return &gadget{decoder: dec, attach: plan, mapIter: it}, nil
}

// rowDecoder decodes a map entry's key bytes followed by its value bytes;
// the key's fields come first, keyFields of them.
func rowDecoder(key, value *btf.Struct) (_ *decoder, keyFields int, _ error) {
	k, err := newDecoder(key)
	if err != nil {
		return nil, 0, fmt.Errorf("key: %w", err)
	}
	v, err := newDecoder(value)
	if err != nil {
		return nil, 0, fmt.Errorf("value: %w", err)
	}
	d := &decoder{size: k.size + v.size, fields: slices.Clone(k.fields)}
	for _, f := range v.fields {
		if slices.ContainsFunc(k.fields, func(kf fieldDecoder) bool { return kf.name == f.name }) {
			return nil, 0, fmt.Errorf("field %s is in both the key (struct %s) and the value (struct %s)", f.name, key.Name, value.Name)
		}
		f.offset += k.size
		d.fields = append(d.fields, f)
	}
	return d, len(k.fields), nil
}

// isInteger tells whether v is of one of Go's integer types, as plain
// integer members decode; Errno and Signal values are not.
func isInteger(v any) bool {
	t := reflect.TypeOf(v)
	return t != nil && t.PkgPath() == "" && t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64
}

// compareIntegers compares two values of the same integer type.
func compareIntegers(a, b any) int {
	x, y := reflect.ValueOf(a), reflect.ValueOf(b)
	if x.CanInt() {
		return cmp.Compare(x.Int(), y.Int())
	}
	return cmp.Compare(x.Uint(), y.Uint())
}

// row is one map entry: its key bytes, which order rows that sort equal,
// and its decoded fields.
type row struct {
	key []byte
	ev  Event
}

// runMapIter prints the gadget's map every interval until ctx is done, the
// timeout passes or MaxEvents rows were printed. What was counted since the
// last round when ctx is done is printed as a last, shorter round (if it has
// rows), so a run shorter than the interval still shows what it saw. The
// caller has loaded and attached the gadget and releases it.
func runMapIter(ctx context.Context, coll *ebpf.Collection, g *gadget, e *emitter, opts Options) error {
	interval := opts.Interval
	if interval == 0 {
		interval = DefaultInterval
	}
	m := coll.Maps[g.mapIter.mapName]
	tick := time.NewTicker(interval)
	defer tick.Stop()
	printed := 0
	// round prints the map's rows; more is false once MaxEvents rows were
	// printed. A last round (final) prints nothing when it has no rows.
	round := func(final bool) (more bool, err error) {
		at := time.Now()
		rows, err := g.mapIter.fetch(m, g.decoder)
		if err != nil {
			return false, err
		}
		// The round's heading gives the number of rows shown, so they are
		// filtered, and cut at MaxEvents, before any is printed. Rows past
		// the cut are not looked at, and not counted.
		var shown []row
		for _, r := range rows {
			if opts.MaxEvents > 0 && printed+len(shown) == opts.MaxEvents {
				break
			}
			e.stats.Events++
			if e.keep(r.ev) {
				shown = append(shown, r)
			}
		}
		if final && len(shown) == 0 {
			return false, nil
		}
		if err := e.printer.round(at, len(shown)); err != nil {
			e.stats.Unprinted += uint64(len(shown))
			return false, fmt.Errorf("print: %w", err)
		}
		e.stats.Rounds++
		for i, r := range shown {
			if err := e.show(r.ev); err != nil {
				// show counted r; the rows after it are not printed either.
				e.stats.Unprinted += uint64(len(shown) - i - 1)
				return false, err
			}
		}
		printed += len(shown)
		return opts.MaxEvents == 0 || printed < opts.MaxEvents, nil
	}
	for {
		select {
		case <-ctx.Done():
			_, err := round(true)
			return err
		case <-tick.C:
		}
		if ctx.Err() != nil { // both were ready; the end wins
			_, err := round(true)
			return err
		}
		if more, err := round(false); err != nil || !more {
			return err
		}
	}
}

// fetch reads and deletes every entry of m and returns them sorted for
// printing: by sortBy, descending, then by key bytes. Deleting is what makes
// each round show only what happened since the one before. An update the
// gadget makes to an entry between its read and its delete is lost; that
// window is one system call, and a single-syscall read-and-delete of hash
// maps (BPF_MAP_LOOKUP_AND_DELETE_ELEM), which would narrow it, needs Linux 5.14.
func (it *mapIter) fetch(m *ebpf.Map, dec *decoder) ([]row, error) {
	seen := make(map[string]bool)
	var keys [][]byte
	var prev any // nil asks for the first key
	for uint32(len(keys)) < m.MaxEntries() {
		key, err := m.NextKeyBytes(prev)
		if err != nil {
			return nil, fmt.Errorf("map iterator %s: list the keys of map %s: %w", it.name, it.mapName, err)
		}
		// A hash map starts again from its first key when the previous one
		// is gone (an LRU map evicted it), which would list keys again.
		if key == nil || seen[string(key)] {
			break
		}
		seen[string(key)] = true
		keys = append(keys, key)
		prev = key
	}

	rows := make([]row, 0, len(keys))
	raw := make([]byte, 0, dec.size)
	for _, key := range keys {
		var value []byte
		err := m.Lookup(key, &value)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // evicted since it was listed
		}
		if err == nil {
			err = m.Delete(key)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("map iterator %s: read and delete an entry of map %s: %w", it.name, it.mapName, err)
		}
		ev, err := dec.decode(append(append(raw[:0], key...), value...))
		if err != nil {
			return nil, fmt.Errorf("map iterator %s: decode an entry of map %s: %w", it.name, it.mapName, err)
		}
		rows = append(rows, row{key, ev})
	}
	slices.SortFunc(rows, func(a, b row) int {
		if it.sortBy >= 0 {
			if c := compareIntegers(b.ev[it.sortBy].Value, a.ev[it.sortBy].Value); c != 0 {
				return c
			}
		}
		return bytes.Compare(a.key, b.key)
	})
	return rows, nil
}
