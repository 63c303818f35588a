package proto

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Room history and resume.
//
// A join of a room may ask for the room's recent broadcasts, under the join
// parameter JoinHistory (phoenix.js: socket.channel(topic, () => params),
// a function, so that each rejoin sends the position it reached):
//
//	{"history": {"last": 50}}     the 50 most recent messages
//	{"history": {"since": "812"}} every message after position "812"
//
// The join reply's response is then a HistoryReply: the messages oldest
// first, the position to resume from, and whether nothing after "since"
// was lost. Live broadcasts that follow the reply continue exactly after
// the last message of the reply: the gateway holds the channel's
// broadcasts from the moment it enters the room until the reply is sent,
// and hands on only those after the position the history ends at
// (JoinRequest.Position, Reply.Resume). On such channels every live
// broadcast carries its position as the frame's ref, which phoenix.js hands
// to channel.on callbacks as their second argument.
//
// A position is the broadcast's sequence in RoomStream, sent as a decimal
// string; clients must treat it as opaque. It is the same on every gateway
// and survives restarts (the streams are on disk). phoenix.js's own refs
// are decimal strings too: a broadcast whose position equals the ref of
// the heartbeat phoenix.js is waiting for counts, for phoenix.js, as that
// heartbeat's reply (it came over the same live connection, so nothing is
// hidden; the real reply is then ignored). Channel replies are matched by
// event (phx_reply), so pushes are unaffected.
//
// The messages come from HistoryStream, a mirror of RoomStream (same
// sequences) that keeps, per room, the last HistoryOptions.MaxMsgsPerRoom
// broadcasts for at most HistoryOptions.MaxAge.
const (
	// JoinHistory is the join parameter that asks for history.
	JoinHistory = "history"
	// HistoryStream is the mirror of RoomStream that keeps history.
	HistoryStream = "PHX_HISTORY"
)

// Defaults of HistoryOptions.
const (
	DefaultHistoryMaxMsgsPerRoom = 100
	DefaultHistoryMaxAge         = 24 * time.Hour
	DefaultHistoryMaxBytes       = 1 << 30
)

// HistoryOptions size HistoryStream.
type HistoryOptions struct {
	// Replicas as RoomStream's (3 on a cluster). Default 1.
	Replicas int
	// MaxMsgsPerRoom is how many broadcasts each room keeps (JetStream's
	// MaxMsgsPerSubject: a busy room drops its own oldest, never another
	// room's). Default DefaultHistoryMaxMsgsPerRoom.
	MaxMsgsPerRoom int64
	// MaxAge is how long a broadcast is kept. Default DefaultHistoryMaxAge.
	MaxAge time.Duration
	// MaxBytes bounds the whole stream; past it the oldest broadcasts of
	// all rooms go first. Default DefaultHistoryMaxBytes.
	MaxBytes int64
}

// EnsureHistoryStream creates HistoryStream as a mirror of RoomStream, or
// updates its limits when it exists. RoomStream must exist.
func EnsureHistoryStream(ctx context.Context, js jetstream.JetStream, opts HistoryOptions) (jetstream.Stream, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.MaxMsgsPerRoom <= 0 {
		opts.MaxMsgsPerRoom = DefaultHistoryMaxMsgsPerRoom
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultHistoryMaxAge
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultHistoryMaxBytes
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        HistoryStream,
		Description: "phxnats room history: a mirror of " + RoomStream + " (same sequences); see proto.HistoryStream",
		Mirror:      &jetstream.StreamSource{Name: RoomStream},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		// Per room: a busy room drops its own oldest, not other rooms'.
		MaxMsgsPerSubject: opts.MaxMsgsPerRoom,
		MaxAge:            opts.MaxAge,
		MaxBytes:          opts.MaxBytes,
		MaxMsgSize:        RoomStreamMaxMsgSize,
		Replicas:          opts.Replicas,
		// Reads by sequence go to any replica, not through the leader.
		AllowDirect: true,
	})
	if err != nil {
		return nil, fmt.Errorf("proto: create stream %s: %w", HistoryStream, err)
	}
	return st, nil
}

// HistoryRequest is what a join asked for under JoinHistory: Last > 0 for
// the last Last messages, or Since for the messages after a position.
type HistoryRequest struct {
	Last     int
	Since    uint64
	HasSince bool
}

// ErrBadHistory refuses a join whose "history" parameter is malformed.
var ErrBadHistory = errors.New(`history must be {"last": N} with N > 0 or {"since": position}`)

// HistoryOf reads the JoinHistory parameter of a phx_join payload: nil when
// the join did not ask for history, ErrBadHistory when it asked wrongly.
// "since" takes a position as sent in replies (a decimal string) or as a
// number; "last" a positive integer, which the room's service caps.
func HistoryOf(payload []byte) (*HistoryRequest, error) {
	payload = bytes.TrimSpace(payload)
	if len(payload) < 2 || payload[0] != '{' || !bytes.Contains(payload, []byte(`"`+JoinHistory+`"`)) {
		return nil, nil // most joins: no parse
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(payload, &p) != nil {
		return nil, nil
	}
	raw, ok := p[JoinHistory]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var h struct {
		Last  json.RawMessage `json:"last"`
		Since json.RawMessage `json:"since"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, ErrBadHistory
	}
	switch {
	case h.Last != nil && h.Since != nil:
		return nil, ErrBadHistory
	case h.Last != nil:
		n, err := strconv.ParseInt(string(h.Last), 10, 64) // digits only: no string, no fraction
		if errors.Is(err, strconv.ErrRange) && len(h.Last) > 0 && h.Last[0] != '-' {
			n, err = 1<<30, nil // any huge N: the service caps it
		}
		if err != nil || n <= 0 {
			return nil, ErrBadHistory
		}
		return &HistoryRequest{Last: int(min(n, 1<<30))}, nil
	case h.Since != nil:
		pos, err := ParsePosition(h.Since)
		if err != nil {
			return nil, ErrBadHistory
		}
		return &HistoryRequest{Since: pos, HasSince: true}, nil
	}
	return nil, ErrBadHistory
}

// FormatPosition is a position as sent to clients.
func FormatPosition(seq uint64) string { return strconv.FormatUint(seq, 10) }

// ParsePosition reads a position as a client sends it back: the string of
// FormatPosition, or the same digits as a JSON number.
func ParsePosition(raw json.RawMessage) (uint64, error) {
	s := string(bytes.TrimSpace(raw))
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	if s == "" || len(s) > 20 {
		return 0, ErrBadHistory
	}
	return strconv.ParseUint(s, 10, 64)
}

// HistoryReply is the join reply's response for a join that asked for
// history.
type HistoryReply struct {
	// Messages are the room's broadcasts oldest first, those the channel
	// would have received live (its other join parameters apply).
	Messages []HistoryMessage `json:"messages"`
	// Seq is the position to resume from: pass it back as "since".
	Seq string `json:"seq"`
	// Recovered is true only when Messages hold every broadcast after
	// "since" (for "last": every one of the last messages, none left
	// out). False when retention dropped some, or a binary broadcast was
	// left out.
	Recovered bool `json:"recovered"`
}

// HistoryMessage is one broadcast of a HistoryReply.
type HistoryMessage struct {
	Seq     string          `json:"seq"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
}

// HistorySubject is where the gateway asks a room's service for the
// history of a join that asked for it: "phx.svc.<service>.history", sent
// once the socket is in the room (and holds its live broadcasts), with the
// join's JoinRequest and its Position. The service checks the join as for
// JoinedSubject (a private room's membership from its store, not a cache),
// and answers with a Reply whose Response is a HistoryReply holding the
// messages up to Position (no later: those reach the channel live) and
// whose Resume is the position the live broadcasts continue after.
// Subscribers: the service's instances in one queue group.
func HistorySubject(service string) string { return "phx.svc." + service + ".history" }
