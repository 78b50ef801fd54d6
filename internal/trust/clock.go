package trust

import "time"

// clockFloor is a time every real clock is past; a device clock before it (no RTC, no NTP yet)
// is treated as unknown rather than trusted to judge expiry.
var clockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// ClockKnown returns now, or the zero time if now is before 2025: a device that booted without
// a real-time clock neither rejects trust as expired nor accepts it as fresh on the strength of
// a clock that says 1970. Everything that judges expiry treats the zero time as "unknown".
func ClockKnown(now time.Time) time.Time {
	if now.Before(clockFloor) {
		return time.Time{}
	}
	return now
}

// Expired reports whether trust the fleet said expires at expires (Unix seconds; 0 if it never
// said) is stale at now, a ClockKnown time: never when the fleet set no expiry or the clock is
// unknown. It is verify's freshness rule, so that what reports staleness agrees with what
// refuses gadgets for it.
func Expired(expires int64, now time.Time) bool {
	return expires != 0 && !now.IsZero() && now.Unix() > expires
}
