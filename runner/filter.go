package runner

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Filter keeps only the events whose field Field prints as Value: the text
// the columns output shows for it, compared exactly. For example
// {"error", "ENOENT"}, {"dst", "127.0.0.1:443"}, {"comm", "sshd"}. A value
// the field's type never prints as (error=ENOENTX, error=2 when errno 2
// prints as ENOENT, pid=-1, ok=yes) is refused before anything is loaded.
type Filter struct {
	Field string
	Value string
}

// ParseFilter parses "field=value" into a Filter. The value may be empty
// and may contain '='.
func ParseFilter(s string) (Filter, error) {
	field, value, ok := strings.Cut(s, "=")
	if !ok || field == "" {
		return Filter{}, fmt.Errorf("filter %q: want field=value", s)
	}
	return Filter{Field: field, Value: value}, nil
}

// view is what a run prints of each event: which fields, in which order,
// and which events at all.
type view struct {
	columns []int // indexes into the decoder's fields, in printing order
	filters []fieldFilter
}

type fieldFilter struct {
	index int
	value string
}

// newView checks the field names of Options.Fields and Options.Filters
// against the event struct. No fields means all of them.
func newView(d *decoder, fields []string, filters []Filter) (*view, error) {
	index := make(map[string]int, len(d.fields))
	for i, f := range d.fields {
		index[f.name] = i
	}
	lookup := func(what, name string) (int, error) {
		i, ok := index[name]
		if !ok {
			names := make([]string, len(d.fields))
			for i, f := range d.fields {
				names[i] = f.name
			}
			return 0, fmt.Errorf("%s: no field %q (the gadget's fields are %s)", what, name, strings.Join(names, ", "))
		}
		return i, nil
	}

	v := &view{}
	if len(fields) == 0 {
		for i := range d.fields {
			v.columns = append(v.columns, i)
		}
	}
	seen := make(map[int]bool, len(fields))
	for _, name := range fields {
		i, err := lookup("fields", name)
		if err != nil {
			return nil, err
		}
		if seen[i] {
			return nil, fmt.Errorf("fields: %q is listed twice", name)
		}
		seen[i] = true
		v.columns = append(v.columns, i)
	}
	for _, f := range filters {
		i, err := lookup("filter "+f.Field+"="+f.Value, f.Field)
		if err != nil {
			return nil, err
		}
		if check := d.fields[i].check; check != nil {
			if err := check(f.Value); err != nil {
				return nil, fmt.Errorf("filter %s=%s: field %s is %w", f.Field, f.Value, f.Field, err)
			}
		}
		v.filters = append(v.filters, fieldFilter{i, f.Value})
	}
	return v, nil
}

// match tells whether ev passes every filter.
func (v *view) match(ev Event) bool {
	for _, f := range v.filters {
		if formatValue(ev[f.index].Value) != f.value {
			return false
		}
	}
	return true
}

// The checks of filter values (fieldDecoder.check): each returns nil when a
// value of the field prints as the text it is given, and otherwise an error
// naming the field's type and what it prints as.

// textCheck is the check of a char array of maxLen bytes and a NUL.
func textCheck(maxLen int) func(string) error {
	return func(s string) error {
		if len(s) > maxLen || strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("text of at most %d bytes without NUL", maxLen)
		}
		return nil
	}
}

// intCheck is the check of an integer: in range, and in decimal without
// leading zeros or a plus sign, as it prints.
func intCheck(size uint32, signed bool) func(string) error {
	bits := int(8 * size)
	return func(s string) error {
		if signed {
			if n, err := strconv.ParseInt(s, 10, bits); err != nil || strconv.FormatInt(n, 10) != s {
				return fmt.Errorf("an int%d, printed in decimal from %d to %d", bits, int64(-1)<<(bits-1), int64(1)<<(bits-1)-1)
			}
			return nil
		}
		if n, err := strconv.ParseUint(s, 10, bits); err != nil || strconv.FormatUint(n, 10) != s {
			return fmt.Errorf("a uint%d, printed in decimal from 0 to %d", bits, uint64(1<<bits-1))
		}
		return nil
	}
}

// namedCheck is the check of a value that prints as its name, or as its
// number when it has none: errnos, signals, system calls, enums. typ says
// what the field is and prints as; byName finds the number of a name.
func namedCheck(typ string, byName func(string) (int64, bool), prints func(int64) string) func(string) error {
	return func(s string) error {
		n, ok := byName(s)
		if !ok {
			var err error
			if n, err = strconv.ParseInt(s, 10, 64); err != nil {
				return errors.New(typ)
			}
		}
		if p := prints(n); p != s {
			return fmt.Errorf("%s: %s prints as %s", typ, s, p)
		}
		return nil
	}
}

func boolCheck(s string) error {
	if s != "true" && s != "false" {
		return errors.New("a bool, printed as true or false")
	}
	return nil
}

func timestampCheck(s string) error {
	if t, err := time.Parse(timeLayout, s); err != nil || t.UTC().Format(timeLayout) != s {
		return fmt.Errorf("a timestamp (%s), printed in UTC with nanoseconds, as %s", timestampTag, time.Unix(0, 0).UTC().Format(timeLayout))
	}
	return nil
}

// endpointCheck is the check of a struct gadget_l3endpoint (an address)
// or, l4, gadget_l4endpoint (address and port). Both print as "" when they
// hold no address.
func endpointCheck(l4 bool) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		if l4 {
			if a, err := netip.ParseAddrPort(s); err != nil || a.Addr().Zone() != "" || a.String() != s {
				return fmt.Errorf("an address and port (%s), printed as 127.0.0.1:443 or [::1]:443, or as \"\" for none", l4EndpointTag)
			}
			return nil
		}
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" || a.String() != s {
			return fmt.Errorf("an address (%s), printed as 127.0.0.1 or ::1, or as \"\" for none", l3EndpointTag)
		}
		return nil
	}
}
