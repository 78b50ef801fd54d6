// Command bpfleet is the device side of bpfleet: the agent daemon that receives trust over
// MQTT, and the local CLI that imports, verifies and runs gadgets with no network at all.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/bpfleet/bpfleet/agent"
	"github.com/bpfleet/bpfleet/internal/cosign"
	"github.com/bpfleet/bpfleet/internal/oci"
	"github.com/bpfleet/bpfleet/internal/trust"
	"github.com/bpfleet/bpfleet/runner"
	"github.com/bpfleet/bpfleet/verify"
)

func main() {
	var dataDir string
	root := &cobra.Command{
		Use:           "bpfleet",
		Short:         "Run signed eBPF gadgets on this device, verified offline against trust pushed earlier",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&dataDir, "data-dir", "/var/lib/bpfleet", "device data directory (trust store and images)")
	root.AddCommand(agentCmd(&dataDir), imageCmd(&dataDir), verifyCmd(&dataDir), runCmd(&dataDir), trustCmd(&dataDir), verifyBundleCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bpfleet:", err)
		os.Exit(1)
	}
}

// signalContext is cancelled by Ctrl-C or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal ends the command in order; a second one kills it at once (the default
	// action). That is safe: the trust store survives a crash, and nothing of a gadget is
	// pinned, so its programs, maps and links go with the process.
	context.AfterFunc(ctx, stop)
	return ctx, stop
}

// outputFormat is the -o flag: it refuses formats it does not know when parsed.
type outputFormat string

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	if s != "columns" && s != "json" {
		return fmt.Errorf("unknown output format %q (columns or json)", s)
	}
	*o = outputFormat(s)
	return nil
}

func addOutputFlag(c *cobra.Command, out *outputFormat) {
	*out = "columns"
	c.Flags().VarP(out, "output", "o", "output format: columns or json")
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func agentCmd(dataDir *string) *cobra.Command {
	var config string
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the device agent: keep the fleet session, apply trust deltas, report status",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := agent.LoadConfig(config)
			if err != nil {
				return err
			}
			a, err := agent.New(*cfg, *dataDir, slog.New(slog.NewTextHandler(os.Stderr, nil)))
			if err != nil {
				return err
			}
			ctx, stop := signalContext()
			defer stop()
			return a.Run(ctx)
		},
	}
	c.Flags().StringVar(&config, "config", "/etc/bpfleet/agent.json", "agent configuration file")
	return c
}

func imageCmd(dataDir *string) *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Manage the device's gadget images"}
	imp := &cobra.Command{
		Use:   "import DIR|TAR",
		Short: "Import an OCI image layout, or a tar of one (as `ig image export` writes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			descs, err := agent.ImportImage(*dataDir, args[0])
			if err != nil {
				return err
			}
			for _, d := range descs {
				if ref := d.Annotations[oci.AnnotationRefName]; ref != "" {
					fmt.Printf("imported %s %s\n", ref, d.Digest)
					continue
				}
				// Per-arch manifests of an index and `cosign save` entries carry no tag.
				what := d.MediaType
				if d.Platform != nil {
					what = d.Platform.OS + "/" + d.Platform.Architecture + " manifest"
				} else if kind := d.Annotations[cosign.AnnotationKind]; kind != "" {
					what = kind
				}
				fmt.Printf("imported untagged %s (%s)\n", d.Digest, what)
			}
			return nil
		},
	}
	var out outputFormat
	list := &cobra.Command{
		Use:   "list",
		Short: "List imported images",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			images, err := agent.Images(*dataDir)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(images)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "REF\tDIGEST\tCREATED")
			for _, img := range images {
				fmt.Fprintf(w, "%s\t%.19s\t%s\n", img.Ref, img.Digest, img.Created)
			}
			return w.Flush()
		},
	}
	addOutputFlag(list, &out)
	var inspectOut outputFormat
	inspect := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show an image's platforms, layers and the signatures stored with it (verifies nothing)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			info, err := agent.InspectImage(*dataDir, args[0])
			if err != nil {
				return err
			}
			if inspectOut == "json" {
				return printJSON(info)
			}
			fmt.Printf("%s\n  digest:     %s\n  signatures: %d legacy, %d referrer(s) in the image store\n", info.Ref, info.Digest, info.LegacySignatures, info.Referrers)
			for k, v := range info.Annotations {
				if v != "" {
					fmt.Printf("  %s: %s\n", k, v)
				}
			}
			for _, p := range info.Platforms {
				fmt.Printf("  %s  %s\n", p.Platform, p.Manifest)
				for _, l := range p.Layers {
					fmt.Printf("    %-45s %s %d bytes\n", l.MediaType, l.Digest, l.Size)
				}
			}
			return nil
		},
	}
	addOutputFlag(inspect, &inspectOut)
	remove := &cobra.Command{
		Use:   "remove REF",
		Short: "Untag an image (a digest: every tag of it); its blobs and signatures go when no other tag uses them",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			tags, n, err := agent.RemoveImage(*dataDir, args[0])
			if err != nil {
				return err
			}
			what := strings.Join(tags, ", ")
			if what == "" { // an untagged image, or a signature's own tag
				what = args[0]
			}
			fmt.Printf("removed %s (%d blob(s) deleted)\n", what, n)
			return nil
		},
	}
	tag := &cobra.Command{
		Use:   "tag REF NEWREF",
		Short: "Give an image another name (moving NEWREF if it names another image)",
		Args:  cobra.ExactArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			digest, prev, err := agent.TagImage(*dataDir, args[0], args[1])
			if err != nil {
				return err
			}
			// Repointing a tag is allowed, as with docker tag, but not silently.
			if prev != "" && prev != digest {
				fmt.Fprintf(os.Stderr, "moved tag %s from %s to %s\n", args[1], prev, digest)
			}
			return nil
		},
	}
	var exportTo string
	export := &cobra.Command{
		Use:   "export REF... -o DIR|FILE.tar",
		Short: "Export images with their signatures as an OCI layout or its tar (what ig image import reads)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if exportTo == "" {
				return fmt.Errorf("-o DIR or -o FILE.tar is required")
			}
			return agent.ExportImages(*dataDir, exportTo, args...)
		},
	}
	export.Flags().StringVarP(&exportTo, "output", "o", "", "layout directory, or a file ending in .tar")
	c.AddCommand(imp, list, inspect, remove, tag, export)
	return c
}

func verifyCmd(dataDir *string) *cobra.Command {
	var out outputFormat
	var keys []string
	c := &cobra.Command{
		Use:   "verify REF",
		Short: "Verify a gadget offline and explain the decision",
		Long: "Verify a gadget against the device's trust store, with no network. With --key, verify\n" +
			"against exactly the given public keys instead (like `cosign verify --key`); what the\n" +
			"device's fleet denied or revoked (digests, keys) stays refused.\n\n" +
			"With -o json a refusal is a JSON object too, {\"ref\", \"verified\": false, \"error\",\n" +
			"\"reason\"}, and the exit status is non-zero; see docs/verification.md for the reasons.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			g, err := agent.Verify(*dataDir, args[0], keys)
			if err != nil {
				if out == "json" {
					// Scripts get something to parse; the error still goes to stderr and the
					// exit status.
					if perr := printJSON(refusal{Ref: args[0], Error: err.Error(), Reason: verify.Reason(err)}); perr != nil {
						return fmt.Errorf("%w (printing it: %w)", err, perr)
					}
				}
				return err
			}
			d := g.Decision()
			if out == "json" {
				return printJSON(d)
			}
			basis := fmt.Sprintf("version %d %s", d.TrustVersion, d.TrustState)
			if len(keys) > 0 {
				basis = "ad-hoc: the keys given with --key, not the trust store's (its deny-list and revocations still apply)"
			}
			verdict := "verified"
			if !d.Verified {
				verdict = "ALLOWED WITHOUT A VALID SIGNATURE"
			}
			fmt.Printf("%s %s\n  digest:    %s\n  key:       %s\n  signature: %s (%s)\n  policy:    scope %s, level %s\n  trust:     %s\n",
				verdict, d.Ref, d.Digest, d.KeyID, d.Format, d.Source, d.Scope, d.Level, basis)
			for _, w := range d.Warnings {
				fmt.Printf("  warning:   %s\n", w)
			}
			return nil
		},
	}
	addOutputFlag(c, &out)
	c.Flags().StringArrayVar(&keys, "key", nil, "verify with this public key instead of the trust store (repeatable)")
	return c
}

// refusal is what `verify -o json` prints when it refuses.
type refusal struct {
	Ref      string `json:"ref"`
	Verified bool   `json:"verified"` // always false
	Error    string `json:"error"`
	// Reason is verify.Reason's one stable word for the kind of error.
	Reason string `json:"reason"`
}

func runCmd(dataDir *string) *cobra.Command {
	var out outputFormat
	var timeout, interval time.Duration
	var maxEvents, width int
	var params, filters, fields []string
	var listParams bool
	c := &cobra.Command{
		Use:   "run REF",
		Short: "Verify a gadget offline, then load it and print its events",
		Long: "Verify a gadget against the device's trust store (no network), load and attach its eBPF\n" +
			"program, and print its events until Ctrl-C, --timeout or --max-events. A gadget that does\n" +
			"not verify is refused before anything reaches the kernel.\n\n" +
			"--param name=value sets one of the gadget's parameters (see --list-params) before it is\n" +
			"loaded; --fields a,b prints only those fields, in that order; --filter field=value keeps\n" +
			"only the events whose field prints exactly as value (repeat to require several); a value\n" +
			"the field's type never prints as (error=ENOENTX, error=2 for ENOENT) is refused.\n\n" +
			"A map iterator gadget (top_file) prints its rows every --interval, each round sorted by\n" +
			"its first counter, descending, and starts counting afresh; --max-events counts rows, and\n" +
			"with -o json each row's first member \"round\" is the round's time (UTC, RFC 3339 with\n" +
			"nanoseconds). A snapshotter (snapshot_process) prints one snapshot and exits.\n\n" +
			"Signal and errno parameters take names (SIGTERM or TERM, ENOENT) or numbers; a\n" +
			"<map>_max_entries parameter sizes that map and must be positive.\n\n" +
			"Columns fit the terminal: text, then integer columns narrow until a line fits, and longer\n" +
			"text is cut, ending in \"…\"; a line that cannot fit even so prints whole, as when piped\n" +
			"or redirected, where values print whole (--width sets a width).",
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if timeout < 0 || maxEvents < 0 || width < 0 {
				return fmt.Errorf("--timeout, --max-events and --width must not be negative")
			}
			if !c.Flags().Changed("width") {
				width = terminalWidth(os.Stdout)
			}
			if interval < minInterval {
				return fmt.Errorf("--interval %v: must be at least %v (each round reads and clears the whole map)", interval, minInterval)
			}
			if listParams && (len(params) > 0 || len(fields) > 0 || len(filters) > 0) {
				return fmt.Errorf("--list-params only lists the gadget's parameters: it takes no --param, --fields or --filter")
			}
			opts := runner.Options{Timeout: timeout, MaxEvents: maxEvents, Fields: fields, Interval: interval, Width: width}
			if out == "json" {
				opts.Format = runner.FormatJSON
			}
			for _, p := range params {
				name, value, ok := strings.Cut(p, "=")
				if !ok || name == "" {
					return fmt.Errorf("--param %q: want name=value", p)
				}
				if opts.Params == nil {
					opts.Params = make(map[string]string)
				}
				if _, dup := opts.Params[name]; dup {
					return fmt.Errorf("--param %s is given twice", name)
				}
				opts.Params[name] = value
			}
			for _, f := range filters {
				filter, err := runner.ParseFilter(f)
				if err != nil {
					return fmt.Errorf("--filter: %w", err)
				}
				opts.Filters = append(opts.Filters, filter)
			}
			// Listing parameters runs nothing, so it does not count as a use of a break-glass
			// override; running does, and is recorded before anything is loaded.
			approve := agent.ApproveRun
			if listParams {
				approve = func(dataDir, ref string) (*verify.Approved, error) { return agent.Verify(dataDir, ref, nil) }
			}
			g, err := approve(*dataDir, args[0])
			if err != nil {
				return fmt.Errorf("refusing to run: %w", err)
			}
			d := g.Decision()
			if d.Verified {
				fmt.Fprintf(os.Stderr, "verified %s %s: key %.16s… (%s), trust version %d, level %s\n",
					g.Ref(), g.Digest(), d.KeyID+d.Identity, d.Source, d.TrustVersion, d.Level)
			} else {
				fmt.Fprintf(os.Stderr, "NOT VERIFIED, running %s %s by policy (scope %s, level %s)\n", g.Ref(), g.Digest(), d.Scope, d.Level)
			}
			for _, w := range d.Warnings {
				fmt.Fprintf(os.Stderr, "warning: %s\n", w)
			}
			if listParams {
				ps, err := runner.Params(g)
				if err != nil {
					return err
				}
				if out == "json" {
					return printJSON(ps)
				}
				if len(ps) == 0 {
					fmt.Printf("gadget %s has no parameters\n", g.Ref())
					return nil
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "PARAM\tTYPE\tDEFAULT\tSIZES MAP\tDESCRIPTION")
				for _, p := range ps {
					typ := p.Type
					switch {
					case p.MaxLen > 0:
						typ = fmt.Sprintf("%s (max %d bytes)", p.Type, p.MaxLen)
					case p.Type == "signal":
						typ = "signal (name or number)"
					case p.Type == "errno":
						typ = "errno (name or number)"
					}
					sizes := "-"
					if p.SizesMap != "" {
						sizes = p.SizesMap + " (max_entries, > 0)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%q\t%s\t%s\n", p.Name, typ, p.Default, sizes, p.Description)
				}
				return tw.Flush()
			}
			ctx, stop := signalContext()
			defer stop()
			stats, err := runner.Run(ctx, g, opts)
			// No stats: the gadget never ran (a parameter, field or filter was refused, or
			// the kernel refused to load it), and the error alone says why.
			if stats != nil {
				fmt.Fprintln(os.Stderr, runSummary(stats))
			}
			return err
		},
	}
	addOutputFlag(c, &out)
	c.Flags().DurationVar(&timeout, "timeout", 0, "stop after this long (default: until Ctrl-C)")
	c.Flags().IntVar(&maxEvents, "max-events", 0, "stop after this many events (that pass --filter)")
	c.Flags().DurationVar(&interval, "interval", runner.DefaultInterval, "how often a map iterator gadget (top_file) prints and clears its rows, at least 100ms (other gadgets have no rounds)")
	c.Flags().StringArrayVar(&params, "param", nil, "set a gadget parameter, name=value (repeatable)")
	c.Flags().BoolVar(&listParams, "list-params", false, "list the gadget's parameters with their types, defaults and the maps they size, and exit")
	c.Flags().StringSliceVar(&fields, "fields", nil, "print only these fields, in this order (comma-separated)")
	c.Flags().StringArrayVar(&filters, "filter", nil, "keep only events whose field prints as value, field=value (repeatable)")
	c.Flags().IntVar(&width, "width", 0, "fit column lines in this many characters, 0 for no limit (default: the terminal's width, no limit when not a terminal)")
	return c
}

// minInterval is the shortest --interval: shorter rounds would print mostly empty headings.
const minInterval = 100 * time.Millisecond

// terminalWidth is the width of the terminal f is, in characters; 0 when f is not a terminal
// (a pipe, a file), which then gets every value whole.
func terminalWidth(f *os.File) int {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	return int(ws.Col)
}

// runSummary says what a run printed, in the gadget's own unit: events, rows in rounds, or
// records; and, if the output did not take them all, how many it did not (the error then says
// why).
func runSummary(s *runner.Stats) string {
	var summary string
	switch s.Kind {
	case runner.KindMapIterator:
		summary = fmt.Sprintf("%d row(s) printed in %d round(s), %d filtered out", s.Printed(), s.Rounds, s.Filtered)
	case runner.KindSnapshotter:
		summary = fmt.Sprintf("%d record(s) printed, %d filtered out", s.Printed(), s.Filtered)
	default:
		summary = fmt.Sprintf("%d event(s) printed, %d filtered out, %d lost", s.Printed(), s.Filtered, s.Lost)
	}
	if s.Unprinted > 0 {
		summary += fmt.Sprintf(", %d not printed (output blocked or failed)", s.Unprinted)
	}
	return summary
}

// freshness says how st's expiry (which it must have) stands at now, as verify judges it.
func freshness(st agent.TrustState, now time.Time) string {
	switch {
	case st.Stale:
		return "expired " + roughly(now.Sub(*st.Expires)) + " ago: strict scopes refuse gadgets until a fresh delta arrives"
	case trust.ClockKnown(now).IsZero():
		return "the device clock is unknown: freshness not checked"
	}
	return "in " + roughly(st.Expires.Sub(now))
}

// roughly says d for a person to read: 45s, 3m, 2h, 1h30m, and in days from two days up.
func roughly(d time.Duration) string {
	d = d.Round(time.Second) // expiries are whole seconds
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour < time.Minute:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

func trustCmd(dataDir *string) *cobra.Command {
	c := &cobra.Command{Use: "trust", Short: "Inspect the device's trust store"}
	var out outputFormat
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the trust version and state digest",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			now := time.Now()
			st, err := agent.TrustStatus(*dataDir, now)
			if err != nil {
				return err
			}
			if out == "json" {
				return printJSON(st)
			}
			expires, policy := "never received trust", "none delivered (defaults: strict)"
			if st.Expires != nil {
				expires = st.Expires.Format(time.RFC3339) + " (" + freshness(st, now) + ")"
			}
			if st.Policy {
				policy = "delivered"
			}
			fmt.Printf("version:      %d\nstate digest: %s\nexpires:      %s\nkeys:         %d\nsignatures:   %d\nrevocations:  %d\npolicy:       %s\n",
				st.Version, st.StateDigest, expires, st.Keys, st.Signatures, st.Revocations, policy)
			return nil
		},
	}
	addOutputFlag(status, &out)
	var auditOut outputFormat
	audit := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: break-glass overrides received and used",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			entries, err := agent.AuditLog(*dataDir)
			if err != nil {
				return err
			}
			if auditOut == "json" {
				return printJSON(entries)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TIME\tEVENT\tDIGEST\tREF\tDETAIL")
			for _, e := range entries {
				fmt.Fprintf(w, "%s\t%s\t%.19s\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Event, e.Digest, e.Ref, e.Detail)
			}
			return w.Flush()
		},
	}
	addOutputFlag(audit, &auditOut)
	c.AddCommand(status, audit)
	return c
}
