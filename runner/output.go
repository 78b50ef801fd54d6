package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Format selects how events are printed.
type Format int

const (
	// FormatColumns prints a header line, then one line per event with
	// columns as wide as the values their types can hold (capped, see
	// maxColumnWidth); a longer value is printed whole and shifts its line.
	// With Options.Width set (a terminal's width), text columns (comm,
	// paths), then integer columns narrow until a line fits, and a text
	// value longer than its column is cut, ending in "…"; times, numbers and
	// addresses are never cut. If a line cannot fit even with every text
	// column at 6 characters and every integer column at 7 (or its name's
	// length), nothing narrows or is cut: values print whole, as with no
	// Width.
	FormatColumns Format = iota
	// FormatJSON prints one JSON object per event and line, with the members
	// of the event struct as keys in declaration order (or in the order of
	// Options.Fields). Errno, Signal and endpoint values are JSON strings
	// holding the text the columns show.
	FormatJSON
)

// maxColumnWidth caps columns of long types such as 256-byte paths, which
// usually hold far shorter values.
const maxColumnWidth = 32

// minColumnWidth is as narrow as fitting a line to a terminal makes a text
// column whose name is shorter: narrower, its values would be all ellipsis.
const minColumnWidth = 6

// numberColumnWidth is as narrow as fitting a line makes an integer column
// (whose type may hold 20 digits): room for the pids, uids and counts of a
// device without a line shifting.
const numberColumnWidth = 7

// printer writes events in one Format.
type printer interface {
	start() error
	print(Event) error
	// round begins one round of a map iterator's rows, fetched at the given
	// time: the columns format heads it with the time and the number of
	// rows, then the header line if there are rows; JSON prints nothing for
	// it but gives each of its rows a first member "round", the time in UTC
	// (RFC 3339 with nanoseconds, as timestamps print). It takes the place
	// of start.
	round(at time.Time, rows int) error
}

// roundKey is the JSON member that tells a map iterator's rounds apart.
const roundKey = "round"

// newPrinter returns a printer of the fields of d at the indexes columns,
// in that order; width is Options.Width.
func newPrinter(w io.Writer, f Format, d *decoder, columns []int, width int) (printer, error) {
	switch f {
	case FormatColumns:
		return newColumns(w, d, columns, width), nil
	case FormatJSON:
		return newJSON(w, d, columns), nil
	default:
		return nil, fmt.Errorf("unknown output format %d", f)
	}
}

type columnPrinter struct {
	w       io.Writer
	columns []int
	names   []string
	widths  []int
	// cut lists the text columns whose longer values are cut to their width
	// (a line width was given, and the line fits it); nil prints every value
	// whole.
	cut []bool
	// last is how long the last column's values may be when cut: the rest of
	// the line, so a path is cut at the terminal's edge.
	last int
	buf  bytes.Buffer
}

func newColumns(w io.Writer, d *decoder, columns []int, lineWidth int) *columnPrinter {
	p := &columnPrinter{w: w, columns: columns}
	var fits []fit
	for _, i := range columns {
		f := d.fields[i]
		name := strings.ToUpper(f.name)
		width := maxColumnWidth
		if f.width > 0 {
			width = min(f.width, maxColumnWidth)
		}
		p.names = append(p.names, name)
		p.widths = append(p.widths, max(width, len(name)))
		fits = append(fits, f.fit)
	}
	if lineWidth > 0 && len(columns) > 0 {
		p.fitTo(lineWidth, fits)
	}
	return p
}

// fitTo narrows columns until a line fits in lineWidth characters: text
// columns first, widest first, down to minColumnWidth; then integer columns
// down to numberColumnWidth; never a name. Text values longer than their
// column are then cut. A line that would not fit even with every column at
// its floor is left as a pipe gets it, values whole: cutting text would not
// keep it from wrapping, and the terminal would show both the wrap and the
// cut.
func (p *columnPrinter) fitTo(lineWidth int, fits []fit) {
	floors := make([]int, len(p.widths))
	total, least := len(p.widths)-1, len(p.widths)-1
	for i, w := range p.widths {
		floors[i] = w
		switch fits[i] {
		case fitText:
			floors[i] = min(w, max(len(p.names[i]), minColumnWidth))
		case fitNumber:
			floors[i] = min(w, max(len(p.names[i]), numberColumnWidth))
		}
		total += w
		least += floors[i]
	}
	if least > lineWidth {
		return
	}
	for _, phase := range []fit{fitText, fitNumber} {
		for total > lineWidth {
			widest := -1
			for i, w := range p.widths {
				if fits[i] == phase && w > floors[i] && (widest < 0 || w > p.widths[widest]) {
					widest = i
				}
			}
			if widest < 0 {
				break
			}
			p.widths[widest]--
			total--
		}
	}
	p.cut = make([]bool, len(fits))
	for i, f := range fits {
		p.cut[i] = f == fitText
	}
	p.last = lineWidth
	for _, w := range p.widths[:len(p.widths)-1] {
		p.last -= w + 1
	}
}

// cutTo shortens s to at most width characters, the last one "…".
func cutTo(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	runes := []rune(s)
	return string(runes[:width-1]) + "…"
}

func (p *columnPrinter) start() error { return p.line(p.names) }

func (p *columnPrinter) round(at time.Time, rows int) error {
	unit := "rows"
	if rows == 1 {
		unit = "row"
	}
	if _, err := fmt.Fprintf(p.w, "--- %s: %d %s\n", at.UTC().Format(time.RFC3339), rows, unit); err != nil || rows == 0 {
		return err
	}
	return p.start()
}

func (p *columnPrinter) print(ev Event) error {
	cells := make([]string, len(p.columns))
	for i, c := range p.columns {
		cells[i] = formatValue(ev[c].Value)
		switch {
		case p.cut == nil || !p.cut[i]:
		case i == len(p.columns)-1:
			cells[i] = cutTo(cells[i], p.last)
		default:
			cells[i] = cutTo(cells[i], p.widths[i])
		}
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
		fmt.Fprintf(&p.buf, "%-*s ", p.widths[i], c) // fmt pads by runes: a cut value ends in "…"
	}
	p.buf.WriteByte('\n')
	_, err := p.w.Write(p.buf.Bytes())
	return err
}

func formatValue(v any) string {
	switch v := v.(type) {
	case time.Time:
		return v.Format(timeLayout)
	case netip.Addr:
		if !v.IsValid() {
			return ""
		}
		return v.String()
	case netip.AddrPort:
		if !v.IsValid() {
			return ""
		}
		return v.String()
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

type jsonPrinter struct {
	w       io.Writer
	columns []int
	keys    [][]byte // each column's `"name":`, encoded once
	// roundAt is the "round" member of a map iterator's rows, quoted; empty
	// for other gadgets.
	roundAt string
	buf     []byte
}

func newJSON(w io.Writer, d *decoder, columns []int) *jsonPrinter {
	p := &jsonPrinter{w: w, columns: columns}
	for _, c := range columns {
		name, _ := json.Marshal(d.fields[c].name) // a string always encodes
		p.keys = append(p.keys, append(name, ':'))
	}
	return p
}

func (*jsonPrinter) start() error { return nil }

func (p *jsonPrinter) round(at time.Time, _ int) error {
	p.roundAt = strconv.Quote(at.UTC().Format(timeLayout))
	return nil
}

func (p *jsonPrinter) print(ev Event) error {
	// Built by hand: a Go map would sort the keys, a struct cannot be declared
	// for a gadget only known at run time. Integers and bools, most of an
	// event, are appended directly: encoding/json costs microseconds a field.
	buf := append(p.buf[:0], '{')
	if p.roundAt != "" {
		buf = append(buf, `"`+roundKey+`":`+p.roundAt...)
	}
	for i, c := range p.columns {
		f := ev[c]
		if i > 0 || p.roundAt != "" {
			buf = append(buf, ',')
		}
		buf = append(buf, p.keys[i]...)
		switch v := f.Value.(type) {
		case uint8, uint16, uint32, uint64: // plain integers only: Errno, Signal and the like print by name
			buf = strconv.AppendUint(buf, reflect.ValueOf(v).Uint(), 10)
		case int8, int16, int32, int64:
			buf = strconv.AppendInt(buf, reflect.ValueOf(v).Int(), 10)
		case bool:
			buf = strconv.AppendBool(buf, v)
		default:
			value, err := json.Marshal(jsonValue(f.Value))
			if err != nil {
				return fmt.Errorf("field %s: %w", f.Name, err)
			}
			buf = append(buf, value...)
		}
	}
	buf = append(buf, "}\n"...)
	p.buf = buf
	_, err := p.w.Write(buf)
	return err
}

// jsonValue prints times and addresses as the columns do.
func jsonValue(v any) any {
	switch v := v.(type) {
	case time.Time:
		return v.Format(timeLayout)
	case netip.Addr, netip.AddrPort:
		return formatValue(v)
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
