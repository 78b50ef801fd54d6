package sync

import "fmt"

// Request is what a device publishes on CatchUpTopic when it connects or sees a gap: what it
// has, so that a server can send what it lacks. It is not signed: it asks for public, signed
// messages and can do no harm beyond costing a reply.
type Request struct {
	Device  string `cbor:"1,keyasint"`
	Root    uint64 `cbor:"2,keyasint"` // version of the device's root
	Version uint64 `cbor:"3,keyasint"` // version of the device's trust state
}

// Batch is a server's reply on ReplyTopic: the fleet's sealed messages that follow what the
// request said the device has, in the order they were issued. The batch itself is not signed:
// every message in it is verified on its own, and Latest is only a hint to ask again.
type Batch struct {
	Fleet    string   `cbor:"1,keyasint"`
	Latest   uint64   `cbor:"2,keyasint"` // the newest trust version the server knows
	Messages [][]byte `cbor:"3,keyasint"`
}

// MaxBatchBytes keeps a batch under MaxMessageSize with room for its framing.
const MaxBatchBytes = MaxMessageSize - 4096

// EncodeRequest and the other codecs below use the protocol's deterministic encoding and
// strict decoding.
func EncodeRequest(r Request) ([]byte, error) { return encMode.Marshal(r) }

// DecodeRequest decodes a catch-up request.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if len(b) > MaxMessageSize {
		return r, fmt.Errorf("%w: request of %d bytes", ErrTooLarge, len(b))
	}
	if err := strict.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: request: %v", ErrMalformed, err)
	}
	return r, nil
}

// EncodeBatch encodes a catch-up reply.
func EncodeBatch(b Batch) ([]byte, error) { return encMode.Marshal(b) }

// DecodeBatch decodes a catch-up reply.
func DecodeBatch(raw []byte) (Batch, error) {
	var b Batch
	if len(raw) > MaxMessageSize {
		return b, fmt.Errorf("%w: batch of %d bytes", ErrTooLarge, len(raw))
	}
	if err := strict.Unmarshal(raw, &b); err != nil {
		return b, fmt.Errorf("%w: batch: %v", ErrMalformed, err)
	}
	return b, nil
}
