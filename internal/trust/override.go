package trust

import (
	"errors"
	"fmt"
	"time"
)

// Override is a break-glass order: on one device, until it expires, one image digest may run
// without a valid signature. Every use is recorded in the device's audit log.
type Override struct {
	Fleet   string `cbor:"1,keyasint" json:"fleet"`
	Device  string `cbor:"2,keyasint" json:"device"`
	Digest  string `cbor:"3,keyasint" json:"digest"`
	Expires int64  `cbor:"4,keyasint" json:"expires"` // Unix seconds
	Reason  string `cbor:"5,keyasint" json:"reason"`
}

// MaxOverride caps how long an override may last: break-glass is for an incident, not a
// policy.
const MaxOverride = 7 * 24 * time.Hour

// ErrOverride is why an override does not apply.
var ErrOverride = errors.New("override not valid")

// Check refuses an override that is not for device, has expired at now, or reaches further
// than MaxOverride beyond now. A zero now (unknown clock) refuses every override: a time limit
// that cannot be checked is no limit.
func (o *Override) Check(device string, now time.Time) error {
	switch {
	case o.Device != device:
		return fmt.Errorf("%w: it is for device %q", ErrOverride, o.Device)
	case now.IsZero():
		return fmt.Errorf("%w: the device clock is unknown", ErrOverride)
	case now.Unix() > o.Expires:
		return fmt.Errorf("%w: expired at %s", ErrOverride, time.Unix(o.Expires, 0).UTC().Format(time.RFC3339))
	case time.Unix(o.Expires, 0).Sub(now) > MaxOverride:
		return fmt.Errorf("%w: it lasts past %s from now, the most allowed", ErrOverride, MaxOverride)
	}
	return nil
}
