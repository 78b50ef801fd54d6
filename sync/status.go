package sync

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	gosync "sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// DeviceState classifies a device against the fleet's latest state.
type DeviceState string

// Device states reported by FleetStatus.
const (
	StateCurrent  DeviceState = "current"
	StateBehind   DeviceState = "behind"
	StateDiverged DeviceState = "diverged"
	StateOffline  DeviceState = "offline"
	// StateInvalid marks a device whose topics hold something it cannot have published: a
	// payload that is not its status or presence, or one naming another device. Without a
	// broker ACL any client can write there; see DeviceReport.Problem.
	StateInvalid DeviceState = "invalid"
)

// DeviceReport is one device in a fleet report. Status is what the device's own valid
// payloads say; a payload that was not valid is left out of it and described in Problem.
type DeviceReport struct {
	Status
	State   DeviceState `json:"state"`
	Problem string      `json:"problem,omitempty"`
}

// FleetHead is the fleet's newest state in the operator's history: what a current device has.
type FleetHead struct {
	Root        uint64 // newest root version
	Version     uint64 // newest trust version
	StateDigest string // state digest at Version
}

// FleetStatus collects the retained statuses and presences of the fleet's devices for wait
// and classifies each device, known by the id in its topics, against head: offline when its
// presence or status says so (an offline device's status still shows what it last applied);
// diverged when it claims a root or version the history does not have, or the head's version
// with another digest; behind when its root or version is older than the head's; else current.
// Status is unsigned and only advisory: a payload on a device's topic that is malformed or
// names another device is not believed, and the device is reported invalid.
func FleetStatus(ctx context.Context, b Broker, clientID, fleet string, head FleetHead, wait time.Duration) ([]DeviceReport, error) {
	board := newStatusBoard(fleet)
	c := mqtt.NewClient(b.options(clientID).SetCleanSession(true))
	if err := waitToken(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("fleet status: connect: %w", err)
	}
	defer c.Disconnect(250)
	topics := map[string]byte{StatusTopic(fleet, "+"): 1, PresenceTopic(fleet, "+"): 1}
	if err := waitToken(ctx, c.SubscribeMultiple(topics, func(_ mqtt.Client, m mqtt.Message) { board.add(m.Topic(), m.Payload()) })); err != nil {
		return nil, fmt.Errorf("fleet status: subscribe: %w", err)
	}
	select {
	case <-time.After(wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	board.mu.Lock()
	defer board.mu.Unlock()
	out := make([]DeviceReport, 0, len(board.devices))
	for _, v := range board.devices {
		r := DeviceReport{Status: v.merged(), Problem: v.problem()}
		if r.Problem != "" {
			r.State = StateInvalid
		} else {
			r.State = head.classify(r.Status)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

func (h FleetHead) classify(s Status) DeviceState {
	switch {
	case !s.Online:
		return StateOffline
	case s.Root > h.Root, s.Version > h.Version, s.Version == h.Version && s.StateDigest != h.StateDigest:
		return StateDiverged
	case s.Root < h.Root, s.Version < h.Version:
		return StateBehind
	default:
		return StateCurrent
	}
}

// statusBoard gathers what a fleet's status and presence topics hold, by the device id in the
// topic: the topic, not the payload, says whose it is, since a broker ACL can restrict who
// writes a topic but nothing checks what a payload claims.
type statusBoard struct {
	fleet   string
	mu      gosync.Mutex
	devices map[string]*deviceView
}

// deviceView is the latest valid status and presence of one device, and why the latest
// payload of each, if it was not valid, was not believed.
type deviceView struct {
	id                         string
	status                     *Status
	presence                   *Presence
	statusWrong, presenceWrong string
}

func newStatusBoard(fleet string) *statusBoard {
	return &statusBoard{fleet: fleet, devices: map[string]*deviceView{}}
}

// add records a payload received on topic and returns a copy of the device's view, or nil for
// a topic that is not a device's status or presence, or an empty payload (a retained message
// being deleted).
func (sb *statusBoard) add(topic string, payload []byte) *deviceView {
	statusID, isStatus := strings.CutPrefix(topic, StatusTopic(sb.fleet, ""))
	presenceID, isPresence := strings.CutPrefix(topic, PresenceTopic(sb.fleet, ""))
	id := statusID
	if isPresence {
		id = presenceID
	}
	if (!isStatus && !isPresence) || id == "" || len(payload) == 0 {
		return nil
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	v := sb.devices[id]
	if v == nil {
		v = &deviceView{id: id}
		sb.devices[id] = v
	}
	if isStatus {
		var s Status
		v.statusWrong = checkPayload(topic, id, payload, &s, &s.Device)
		if v.statusWrong == "" {
			v.status = &s
		}
	} else {
		var p Presence
		v.presenceWrong = checkPayload(topic, id, payload, &p, &p.Device)
		if v.presenceWrong == "" {
			v.presence = &p
		}
	}
	cp := *v
	return &cp
}

// checkPayload decodes payload into dst and says what is wrong with it, if anything: a device
// publishes only JSON that names itself.
func checkPayload(topic, id string, payload []byte, dst any, device *string) string {
	if err := json.Unmarshal(payload, dst); err != nil {
		return fmt.Sprintf("%s holds no valid JSON: %v", topic, err)
	}
	if *device != id {
		return fmt.Sprintf("%s holds a payload naming device %q", topic, *device)
	}
	return ""
}

// merged is the device's status with its presence: offline if either says so.
func (v *deviceView) merged() Status {
	s := Status{Device: v.id}
	if v.status != nil {
		s = *v.status
	} else if v.presence != nil {
		s.Online = v.presence.Online
	}
	if v.presence != nil && !v.presence.Online {
		s.Online = false
	}
	return s
}

func (v *deviceView) problem() string {
	switch {
	case v.statusWrong != "" && v.presenceWrong != "":
		return v.statusWrong + "; " + v.presenceWrong
	case v.statusWrong != "":
		return v.statusWrong
	default:
		return v.presenceWrong
	}
}
