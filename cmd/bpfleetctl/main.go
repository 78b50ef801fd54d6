// Command bpfleetctl is the operator's side of bpfleet: it makes keys, packages and signs
// gadget images, builds signed trust deltas and publishes them to the fleet over MQTT.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	cmd := &cobra.Command{
		Use:           "bpfleetctl",
		Short:         "Operate a bpfleet fleet: keys, gadget images, signatures and trust deltas",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.AddCommand(keygenCmd(), packageCmd(), signCmd(), rootCmd(), deltaCmd(), overrideCmd(), publishCmd(), serveCmd(), statusCmd(), firmwareCmd())
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bpfleetctl:", err)
		os.Exit(1)
	}
}
