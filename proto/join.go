package proto

import (
	"bytes"
	"encoding/json"
	"slices"
)

// Join parameters: keys of a phx_join payload (phoenix.js:
// socket.channel(topic, {sender: true})) that ask for more than the
// channels guide's RoomChannel sends. A join without them gets exactly the
// guide's frames: reply {}, new_msg {"body": ...} and nothing else. Each is
// asked for with the value true; the gateway reads them for delivery, and
// the join's service gets the whole payload as sent. Later features add
// keys here rather than new conventions.
const (
	// JoinSender: broadcasts that have a From carry it in their payload as
	// "user_id" (added last, so it wins over a "user_id" the payload may
	// already hold): {"body": "hi", "user_id": "alice"}.
	JoinSender = "sender"
	// JoinIgnore: broadcasts From users that the socket's user ignores
	// (the guide's ignore/unignore pushes) are skipped on this channel.
	JoinIgnore = "ignore"
	// JoinJoins: user_joined {"user_id"} when a logged-in user joins the
	// room (not to that user's own sockets); the OptIn of roomsvc's
	// announcements.
	JoinJoins = "joins"
	// JoinPresence: Phoenix Presence on the channel (phoenix.js's
	// Presence class): right after the join reply a presence_state push
	// with the room's presences, then presence_diff broadcasts
	// {"joins": {...}, "leaves": {...}}; a logged-in socket is tracked
	// under its user id with one meta per socket (see PresenceBucket).
	JoinPresence = "presence"
)

// MaxJoinFlags bounds the join parameters asked for with true that
// JoinFlags returns; further ones are ignored. A join payload is client
// text bounded only by the frame limit, and the gateway keeps a channel's
// flags for as long as it is joined.
const MaxJoinFlags = 16

// JoinFlags returns the keys of a phx_join payload whose value is true, in
// the order sent, at most MaxJoinFlags of them, each at most
// MaxEventLength bytes. Anything that is not a JSON object asks for
// nothing, as does a key with any other value (so {"sender": "yes"} does
// not count).
func JoinFlags(payload []byte) []string {
	payload = bytes.TrimSpace(payload)
	if len(payload) < 2 || payload[0] != '{' || !bytes.Contains(payload, []byte("true")) {
		return nil // phoenix.js's default {} and anything without a true: no parse
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	var flags []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return flags
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return flags
		}
		// A repeated key counts as its last value, as in JavaScript.
		flags = slices.DeleteFunc(flags, func(f string) bool { return f == key })
		if string(v) == "true" && len(key) <= MaxEventLength && len(flags) < MaxJoinFlags {
			flags = append(flags, key)
		}
	}
	return flags
}
