package rooms

import (
	"encoding/json"
	"fmt"
	"strings"
)

// TopicPrefix starts every topic roomsvc owns, as in the Phoenix channels
// guide's `channel "rooms:*", RoomChannel`.
const TopicPrefix = "rooms:"

// LobbyTopic is open to everyone, anonymous sockets included.
const LobbyTopic = "rooms:lobby"

// DefaultMaxBodyBytes bounds a new_msg body: 64 KiB of UTF-8, room for a
// long post or a pasted log. With the worst JSON escaping (MaxEscapedBody)
// its broadcast still fits NATS's default max_payload of 1 MiB.
const DefaultMaxBodyBytes = 64 << 10

// escapeFactor is how many bytes one byte of a body may take once written
// in JSON: a control character becomes \u00XX.
const escapeFactor = 6

// broadcastEnvelope is what a new_msg broadcast holds besides its body:
// the event, the JSON punctuation and the sender's id, with a wide margin.
const broadcastEnvelope = 4 << 10

// Rules are the business rules of the chat, kept apart from NATS so they can
// be read and tested on their own.
type Rules struct {
	// PublicTopics are topics anyone may join. An entry ending in '*' matches
	// every topic with that prefix (Phoenix's channel route syntax), e.g.
	// "rooms:bench*" for load tests. LobbyTopic is always public.
	PublicTopics []string
	// MaxBodyBytes bounds new_msg bodies in bytes of UTF-8 (a binary
	// body in bytes); default DefaultMaxBodyBytes.
	MaxBodyBytes int
	// AnnounceJoins broadcasts user_joined {user_id} to a room when a
	// logged-in user joins it (the channels guide's intercept example),
	// to the channels joined with proto.JoinJoins only.
	AnnounceJoins bool
	// RoomRateLimit and RoomBytesLimit are each room's budget on this
	// instance, in broadcasts and in bytes per second (budget.go); zero
	// takes DefaultRoomRateLimit and DefaultRoomBytesLimit, Off (or any
	// negative) turns it off.
	RoomRateLimit  float64
	RoomBytesLimit float64
}

// budget makes the per-room budget the rules ask for.
func (r *Rules) budget() *budget {
	limit := func(v, def float64) float64 {
		switch {
		case v == 0:
			return def
		case v < 0:
			return 0
		}
		return v
	}
	return newBudget(limit(r.RoomRateLimit, DefaultRoomRateLimit), limit(r.RoomBytesLimit, DefaultRoomBytesLimit))
}

// IsPublic reports whether anyone may join topic.
func (r *Rules) IsPublic(topic string) bool {
	if topic == LobbyTopic {
		return true
	}
	for _, p := range r.PublicTopics {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(topic, prefix) {
				return true
			}
		} else if topic == p {
			return true
		}
	}
	return false
}

// IsRoom reports whether topic belongs to roomsvc at all.
func IsRoom(topic string) bool {
	return strings.HasPrefix(topic, TopicPrefix) && len(topic) > len(TopicPrefix)
}

// maxBody is MaxBodyBytes or its default.
func (r *Rules) maxBody() int {
	if r.MaxBodyBytes <= 0 {
		return DefaultMaxBodyBytes
	}
	return r.MaxBodyBytes
}

// MaxEscapedBody is the most bytes a new_msg broadcast may take: the
// largest body with every byte escaped, and its envelope.
func (r *Rules) MaxEscapedBody() int { return r.maxBody()*escapeFactor + broadcastEnvelope }

// CheckFits reports, as an error for the operator, a body limit whose
// broadcasts may not fit in a NATS message of maxPayload bytes: such a
// message would be accepted from the client and then fail to publish.
func (r *Rules) CheckFits(maxPayload int64) error {
	if need := int64(r.MaxEscapedBody()); need > maxPayload {
		most := (maxPayload - broadcastEnvelope) / escapeFactor
		return fmt.Errorf("rooms.max_body_bytes %d: a body that long may take %d bytes in a broadcast once escaped in JSON, "+
			"more than the %d bytes a NATS message may carry here (max_payload and the stream's max_msg_size); use at most %d",
			r.maxBody(), need, maxPayload, max(most, 0))
	}
	return nil
}

// NewMsg validates a new_msg payload and returns the body to broadcast.
// Like the guide's RoomChannel, any string is a body, the empty string
// included (phoenix.js sends one when Enter is pressed on an empty
// input). Where the guide's channel would crash (no "body", or not a
// string) the client gets an error reply instead. The error text is what
// the client sees as the reply's reason.
func (r *Rules) NewMsg(payload json.RawMessage) (string, error) {
	var p map[string]json.RawMessage
	if err := json.Unmarshal(payload, &p); err != nil {
		return "", fmt.Errorf("new_msg needs a payload {\"body\": string}")
	}
	raw, ok := p["body"]
	if !ok {
		return "", fmt.Errorf("new_msg needs a payload {\"body\": string}")
	}
	var body string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &body) != nil {
		return "", fmt.Errorf("body must be a string")
	}
	if n, limit := len(body), r.maxBody(); n > limit {
		return "", fmt.Errorf("body is %d bytes, the limit is %d bytes", n, limit)
	}
	return body, nil
}

// NewMsgBinary validates a binary new_msg: at most MaxBodyBytes bytes.
func (r *Rules) NewMsgBinary(data []byte) error {
	if n, limit := len(data), r.maxBody(); n > limit {
		return fmt.Errorf("binary body is %d bytes, the limit is %d bytes", n, limit)
	}
	return nil
}
