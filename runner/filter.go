package runner

import (
	"fmt"
	"strings"
)

// Filter keeps only the events whose field Field prints as Value: the text
// the columns output shows for it, compared exactly. For example
// {"error", "ENOENT"}, {"dst", "127.0.0.1:443"}, {"comm", "sshd"}.
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
