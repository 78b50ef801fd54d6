package runner_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/bpfleet/bpfleet/runner"
	"github.com/bpfleet/bpfleet/verify"
)

// approvedGadget stands for a gadget that package verify approved; only
// verify can create a *verify.Approved.
var approvedGadget *verify.Approved

// Print a gadget's events as JSON lines until Ctrl-C or for at most a minute.
func ExampleRun() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	stats, err := runner.Run(ctx, approvedGadget, runner.Options{
		Format:  runner.FormatJSON,
		Timeout: time.Minute,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "%d events, %d lost\n", stats.Events, stats.Lost)
}

// Collect events as data instead of printing them.
func ExampleOptions_onEvent() {
	var pids []uint32
	_, err := runner.Run(context.Background(), approvedGadget, runner.Options{
		Output:    io.Discard,
		MaxEvents: 10,
		OnEvent: func(ev runner.Event) {
			if pid, ok := ev.Value("pid"); ok {
				pids = append(pids, pid.(uint32))
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pids)
}
