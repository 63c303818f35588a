package rooms

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// TopicPrefix starts every topic roomsvc owns, as in the Phoenix channels
// guide's `channel "rooms:*", RoomChannel`.
const TopicPrefix = "rooms:"

// LobbyTopic is open to everyone, anonymous sockets included.
const LobbyTopic = "rooms:lobby"

// DefaultMaxBodyLength bounds a new_msg body, in characters.
const DefaultMaxBodyLength = 4000

// Rules are the business rules of the chat, kept apart from NATS so they can
// be read and tested on their own.
type Rules struct {
	// PublicTopics are topics anyone may join. An entry ending in '*' matches
	// every topic with that prefix (Phoenix's channel route syntax), e.g.
	// "rooms:bench*" for load tests. LobbyTopic is always public.
	PublicTopics []string
	// MaxBodyLength bounds new_msg bodies in characters (runes).
	MaxBodyLength int
	// AnnounceJoins broadcasts user_joined {user_id} to a room when a
	// logged-in user joins it, as the channels guide does.
	AnnounceJoins bool
	// IncludeSender adds the sender's "user_id" to new_msg payloads from
	// logged-in users ({"body": ..., "user_id": ...}), so pages can show
	// who said what. The guide's payload is {"body"} alone.
	IncludeSender bool
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

// NewMsg validates a new_msg payload and returns the body to broadcast.
// The error text is what the client sees as the reply's reason.
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
	if strings.TrimSpace(body) == "" {
		return "", fmt.Errorf("body is empty")
	}
	max := r.MaxBodyLength
	if max <= 0 {
		max = DefaultMaxBodyLength
	}
	if n := utf8.RuneCountInString(body); n > max {
		return "", fmt.Errorf("body is %d characters, the limit is %d", n, max)
	}
	return body, nil
}

// NewMsgBinary validates a binary new_msg: at most MaxBodyLength bytes.
func (r *Rules) NewMsgBinary(data []byte) error {
	max := r.MaxBodyLength
	if max <= 0 {
		max = DefaultMaxBodyLength
	}
	switch {
	case len(data) == 0:
		return fmt.Errorf("body is empty")
	case len(data) > max:
		return fmt.Errorf("binary body is %d bytes, the limit is %d", len(data), max)
	}
	return nil
}
