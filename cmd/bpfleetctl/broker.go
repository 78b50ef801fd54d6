package main

import (
	"github.com/spf13/pflag"

	"github.com/bpfleet/bpfleet/sync"
)

// brokerFlags are the flags that say how to reach the fleet's broker: its URL and, for
// ssl:// brokers, the CA and the operator's client certificate (the same files a device's
// config names as ca_file, cert_file and key_file).
type brokerFlags struct {
	url, caFile, certFile, keyFile string
}

// addBrokerFlags registers --<name> (the URL, default def) and the TLS flags on f.
func addBrokerFlags(f *pflag.FlagSet, name, def, usage string) *brokerFlags {
	b := &brokerFlags{}
	f.StringVar(&b.url, name, def, usage)
	f.StringVar(&b.caFile, "ca-file", "", "PEM CA that signed the broker's certificate (ssl:// brokers; default: the system's roots)")
	f.StringVar(&b.certFile, "cert-file", "", "PEM client certificate, for brokers that require one")
	f.StringVar(&b.keyFile, "key-file", "", "PEM private key of --cert-file")
	return b
}

func (b *brokerFlags) broker() (sync.Broker, error) {
	t, err := sync.TLSConfig(b.caFile, b.certFile, b.keyFile)
	return sync.Broker{URL: b.url, TLS: t}, err
}
