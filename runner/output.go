package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Format selects how events are printed.
type Format int

const (
	// FormatColumns prints a header line, then one line per event with
	// columns as wide as the values their types can hold (capped, see
	// maxColumnWidth); a longer value is printed whole and shifts its line.
	FormatColumns Format = iota
	// FormatJSON prints one JSON object per event and line, with the members
	// of the event struct as keys in declaration order.
	FormatJSON
)

// maxColumnWidth caps columns of long types such as 256-byte paths, which
// usually hold far shorter values.
const maxColumnWidth = 32

// printer writes events in one Format.
type printer interface {
	start() error
	print(Event) error
}

func newPrinter(w io.Writer, f Format, d *decoder) (printer, error) {
	switch f {
	case FormatColumns:
		return newColumns(w, d), nil
	case FormatJSON:
		return jsonPrinter{w: w}, nil
	default:
		return nil, fmt.Errorf("unknown output format %d", f)
	}
}

type columnPrinter struct {
	w      io.Writer
	names  []string
	widths []int
	buf    bytes.Buffer
}

func newColumns(w io.Writer, d *decoder) *columnPrinter {
	p := &columnPrinter{w: w}
	for _, f := range d.fields {
		name := strings.ToUpper(f.name)
		width := maxColumnWidth
		if f.width > 0 {
			width = min(f.width, maxColumnWidth)
		}
		p.names = append(p.names, name)
		p.widths = append(p.widths, max(width, len(name)))
	}
	return p
}

func (p *columnPrinter) start() error { return p.line(p.names) }

func (p *columnPrinter) print(ev Event) error {
	cells := make([]string, len(ev))
	for i, f := range ev {
		cells[i] = formatValue(f.Value)
	}
	return p.line(cells)
}

func (p *columnPrinter) line(cells []string) error {
	p.buf.Reset()
	for i, c := range cells {
		if i == len(cells)-1 {
			p.buf.WriteString(c) // no trailing blanks
			break
		}
		fmt.Fprintf(&p.buf, "%-*s ", p.widths[i], c)
	}
	p.buf.WriteByte('\n')
	_, err := p.w.Write(p.buf.Bytes())
	return err
}

func formatValue(v any) string {
	switch v := v.(type) {
	case time.Time:
		return v.Format(timeLayout)
	case []any:
		s := make([]string, len(v))
		for i := range v {
			s[i] = formatValue(v[i])
		}
		return "[" + strings.Join(s, " ") + "]"
	default:
		return fmt.Sprint(v)
	}
}

type jsonPrinter struct{ w io.Writer }

func (jsonPrinter) start() error { return nil }

func (p jsonPrinter) print(ev Event) error {
	// Built by hand: a Go map would sort the keys, a struct cannot be declared
	// for a gadget only known at run time.
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, f := range ev {
		if i > 0 {
			buf.WriteByte(',')
		}
		name, err := json.Marshal(f.Name)
		if err != nil {
			return err
		}
		value, err := json.Marshal(jsonValue(f.Value))
		if err != nil {
			return fmt.Errorf("field %s: %w", f.Name, err)
		}
		buf.Write(name)
		buf.WriteByte(':')
		buf.Write(value)
	}
	buf.WriteString("}\n")
	_, err := p.w.Write(buf.Bytes())
	return err
}

// jsonValue prints times with timeLayout, like the columns do.
func jsonValue(v any) any {
	switch v := v.(type) {
	case time.Time:
		return v.Format(timeLayout)
	case []any:
		out := make([]any, len(v))
		for i := range v {
			out[i] = jsonValue(v[i])
		}
		return out
	default:
		return v
	}
}
