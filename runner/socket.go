package runner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// socketFilter is a packet socket that exists only to run a
// BPF_PROG_TYPE_SOCKET_FILTER program on every packet of a network
// namespace. The program reports through the gadget's ring buffer; whatever
// it returns, nobody reads the socket. cilium/ebpf has no link for socket
// filters, so closing the socket is what detaches the program.
type socketFilter struct {
	fd int
}

// openSocketFilter opens an AF_PACKET socket in the calling thread's
// network namespace and attaches prog to it. The socket sees every packet
// of that namespace, sent or received, on every interface.
func openSocketFilter(prog *ebpf.Program) (io.Closer, error) {
	// Protocol 0 receives nothing until the bind below, so no packet reaches
	// the socket before the filter is in place.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.EPERM):
		return nil, fmt.Errorf("open AF_PACKET socket (needs CAP_NET_RAW): %w", err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		return nil, fmt.Errorf("open AF_PACKET socket: packet sockets are not supported by this kernel (CONFIG_PACKET): %w", err)
	case err != nil:
		return nil, fmt.Errorf("open AF_PACKET socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_BPF, prog.FD()); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("attach to AF_PACKET socket (SO_ATTACH_BPF): %w", err)
	}
	// The protocol of a packet socket address is in network byte order.
	all := &unix.SockaddrLinklayer{
		Protocol: binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, unix.ETH_P_ALL)),
		Ifindex:  0, // every interface
	}
	if err := unix.Bind(fd, all); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind AF_PACKET socket to every protocol: %w", err)
	}
	return &socketFilter{fd}, nil
}

// Close closes the socket, which detaches the program.
func (s *socketFilter) Close() error {
	if err := unix.Close(s.fd); err != nil {
		return fmt.Errorf("close socket filter: %w", err)
	}
	return nil
}
