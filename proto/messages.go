package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Reply statuses.
const (
	StatusOK      = "ok"
	StatusError   = "error"
	StatusNoReply = "noreply"
)

// MaxEventLength bounds an event name, for the same reason as MaxTopicLength.
const MaxEventLength = 255

// JoinRequest asks a service whether a socket may join Topic.
type JoinRequest struct {
	Topic string `json:"topic"`
	// UserID is the id from the socket's verified token; "" for an anonymous socket.
	UserID string `json:"user_id,omitempty"`
	// Payload is the phx_join payload exactly as the client sent it (any JSON value).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Gateway and ConnID identify the socket, for logs and later messages.
	Gateway string `json:"gateway,omitempty"`
	ConnID  string `json:"conn_id,omitempty"`
	// Position, in a request to HistorySubject, is the last RoomStream
	// sequence the gateway had handed to the room when the socket
	// entered it: the history must end there, later broadcasts reach the
	// channel live.
	Position uint64 `json:"position,omitempty"`
}

// PushRequest hands a client event on a joined topic to its service.
type PushRequest struct {
	Topic   string          `json:"topic"`
	Event   string          `json:"event"`
	UserID  string          `json:"user_id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Binary holds the payload of a V2 binary push (phoenix.js sends an
	// ArrayBuffer payload that way); Payload is then empty. Base64 in JSON.
	Binary  []byte `json:"binary,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	ConnID  string `json:"conn_id,omitempty"`
}

// Reply is a service's answer to a JoinRequest or PushRequest. The gateway
// turns it into Phoenix's phx_reply {"status": Status, "response": Response}.
type Reply struct {
	Status string `json:"status"`
	// Response is a JSON object; empty means {}.
	Response json.RawMessage `json:"response,omitempty"`
	// Binary, when set, is a binary response (base64 in JSON): V2 clients
	// receive a binary reply frame, V1 clients an error reply.
	Binary []byte `json:"binary,omitempty"`
	// Ignore, when set, changes the socket's list of users whose
	// broadcasts it must not receive (IgnoreUpdate.Apply). It is for the
	// gateway, not sent to the client. Services set it on join replies (the
	// whole list, Ignored) and on ignore changes (a diff, Add or Remove).
	Ignore *IgnoreUpdate `json:"ignore,omitempty"`
	// Confirm, on an ok join reply, asks the gateway to confirm the join
	// once the socket is in the room: it sends the same JoinRequest to
	// JoinedSubject and answers the client with that reply instead (leaving
	// the room again unless it is ok). A permission revoked while the join
	// was on its way is then seen by the confirmation, and one revoked
	// after it finds the socket in the room, where its kick reaches it.
	// roomsvc sets it for private rooms. Not sent to the client.
	Confirm bool `json:"confirm,omitempty"`
	// Resume, on a HistorySubject reply, is the position the channel's
	// live broadcasts continue after: the gateway drops those at or
	// before it. Not sent to the client.
	Resume uint64 `json:"resume,omitempty"`
}

// OK returns an ok Reply with the given response object (nil for {}).
func OK(response json.RawMessage) Reply { return Reply{Status: StatusOK, Response: response} }

// Error returns an error Reply whose response is {"reason": reason}, the
// shape Phoenix apps and phoenix.js use for refusals.
func Error(reason string) Reply { return Reply{Status: StatusError, Response: Reason(reason)} }

// NoReply returns the Reply that tells the gateway not to answer the client.
func NoReply() Reply { return Reply{Status: StatusNoReply} }

// Reason encodes {"reason": reason}.
func Reason(reason string) json.RawMessage {
	b, _ := Marshal(struct {
		Reason string `json:"reason"`
	}{reason})
	return b
}

// Validate checks a Reply received from a service.
func (r *Reply) Validate() error {
	switch r.Status {
	case StatusOK, StatusError, StatusNoReply:
	default:
		return fmt.Errorf("proto: reply status %q is not ok, error or noreply", r.Status)
	}
	if r.Binary != nil && len(r.Response) > 0 {
		return errors.New("proto: reply has both response and binary")
	}
	if len(r.Response) > 0 && !isJSONObject(r.Response) {
		return errors.New("proto: reply response is not a JSON object")
	}
	return nil
}

// Broadcast is the payload of a RoomSubject message: one Phoenix event for
// every socket joined to the room. In JSON:
//
//	{"event": "new_msg", "payload": {"body": "hello"}}
//	{"event": "frame", "binary": "AQID"}
//
// Event is a non-empty string of at most MaxEventLength bytes that does not
// start with "phx_" (those events drive phoenix.js's channel state machine and
// belong to the gateway). Exactly one of Payload, a JSON object, and Binary,
// raw bytes (base64 in JSON), is set. A binary broadcast reaches V2 sockets
// as a binary frame (an ArrayBuffer in phoenix.js); V1 sockets, which cannot
// carry bytes, get the event with {"error": BinaryUnsupported} instead.
type Broadcast struct {
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload,omitempty"`
	Binary  []byte          `json:"binary,omitempty"`
	// From is the user the broadcast comes from, if any. It reaches no
	// client unless asked: channels joined with JoinSender get it in the
	// payload as "user_id", and channels joined with JoinIgnore skip
	// broadcasts From users their user ignores (see SubjectIgnores).
	From string `json:"from,omitempty"`
	// ExcludeFrom keeps the broadcast from From's own sockets, as the
	// channels guide's user_joined intercept does.
	ExcludeFrom bool `json:"exclude_from,omitempty"`
	// OptIn, when set, names a join parameter: only channels joined with
	// {OptIn: true} receive the broadcast. Events beyond the channels
	// guide (roomsvc's user_joined has OptIn JoinJoins) use it, so that a
	// client that joins without parameters sees exactly the guide's frames.
	OptIn string `json:"opt_in,omitempty"`
}

// BinaryUnsupported is the error V1 sockets see in place of binary data.
const BinaryUnsupported = "binary payloads need the V2 serializer (vsn=2.0.0)"

// Validate reports why a Broadcast cannot be delivered to browsers.
func (b *Broadcast) Validate() error {
	switch {
	case b.Event == "":
		return errors.New("proto: broadcast event is empty")
	case len(b.Event) > MaxEventLength:
		return fmt.Errorf("proto: broadcast event longer than %d bytes", MaxEventLength)
	case strings.HasPrefix(b.Event, "phx_"):
		return fmt.Errorf("proto: broadcast event %q is reserved", b.Event)
	case b.Binary != nil && len(b.Payload) > 0:
		return errors.New("proto: broadcast has both payload and binary")
	case b.Binary == nil && !isJSONObject(b.Payload):
		return errors.New("proto: broadcast payload is not a JSON object")
	case len(b.OptIn) > MaxEventLength:
		return fmt.Errorf("proto: broadcast opt_in longer than %d bytes", MaxEventLength)
	}
	return nil
}

// DecodeBroadcast parses and validates a RoomSubject message body.
func DecodeBroadcast(data []byte) (Broadcast, error) {
	var b Broadcast
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("proto: broadcast is not valid JSON: %w", err)
	}
	return b, b.Validate()
}

// VerifyRequest asks authsvc to verify a user token.
type VerifyRequest struct {
	Token string `json:"token"`
}

// Token verification errors, as sent in VerifyReply.Error. They mirror
// Phoenix.Token's {:error, :expired | :invalid | :missing}.
const (
	TokenExpired = "expired"
	TokenInvalid = "invalid"
	TokenMissing = "missing"
	// TokenRevoked: a genuine, unexpired token signed before the user's
	// not-before time (a ban, see SubjectAuthBan).
	TokenRevoked = "revoked"
	// TokenUnavailable: authsvc could not tell (the ban bucket did not
	// answer). Nothing is accepted then; the gateway should answer 503 so
	// that clients retry.
	TokenUnavailable = "unavailable"
)

// VerifyReply is authsvc's answer: UserID when the token is good, else Error.
type VerifyReply struct {
	UserID string `json:"user_id,omitempty"`
	Error  string `json:"error,omitempty"`
}

// SignRequest asks authsvc for a token carrying UserID.
type SignRequest struct {
	UserID string `json:"user_id"`
}

// SignReply carries the signed token, or Error.
type SignReply struct {
	Token string `json:"token,omitempty"`
	Error string `json:"error,omitempty"`
}

// BanRequest asks authsvc to ban (SubjectAuthBan) or unban
// (SubjectAuthUnban) a user.
type BanRequest struct {
	UserID string `json:"user_id"`
	// Seconds is how long the ban lasts; 0 means until an unban.
	Seconds int64 `json:"seconds,omitempty"`
}

// BanReply answers a BanRequest: the user's new not-before time (tokens
// signed before it are refused; absent for a ban until unban), or Error.
type BanReply struct {
	NotBefore string `json:"not_before,omitempty"` // RFC 3339, UTC
	Forever   bool   `json:"forever,omitempty"`
	Error     string `json:"error,omitempty"`
}

// MembershipRequest grants, revokes or lists membership of a private room.
// UserID is ignored by SubjectMembersList.
type MembershipRequest struct {
	Topic  string `json:"topic"`
	UserID string `json:"user_id,omitempty"`
}

// MembershipReply answers a MembershipRequest. Members is set by
// SubjectMembersList; Error is set on failure.
type MembershipReply struct {
	Members []string `json:"members,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && json.Valid(b)
}

// Marshal encodes v as JSON without encoding/json's HTML escaping, so that
// "<", ">" and "&" reach browsers as Phoenix (Jason) would send them.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Kick is the payload of a KickSubject message.
type Kick struct {
	Topic string `json:"topic"`
}

// IgnoreUpdate changes a socket's ignore list. It has one of two forms:
//
//	{"ignored": ["bob", "carol"]}   the whole list (join replies only)
//	{"add": ["bob"]}                a diff: IgnoresSubject messages and
//	{"remove": ["bob"]}             the replies to ignore/unignore pushes
//
// A diff keeps what a change costs independent of the list's length (at
// most roomsvc's rooms.ignore_max entries). Apply gives the new set.
type IgnoreUpdate struct {
	// Ignored, when not nil, is the whole list, replacing the socket's.
	Ignored []string `json:"ignored,omitempty"`
	// Add and Remove, when Ignored is nil, are added to and removed from
	// the socket's current list.
	Add    []string `json:"add,omitempty"`
	Remove []string `json:"remove,omitempty"`
}

// IsDiff reports whether u changes the current list rather than replace it.
func (u *IgnoreUpdate) IsDiff() bool { return u.Ignored == nil }

// Apply returns the set of ignored users after u, given the current one
// (nil for none). current is not modified: the result is a new map, so a
// reader holding the old one (an atomic pointer) never sees it change.
func (u *IgnoreUpdate) Apply(current map[string]struct{}) map[string]struct{} {
	if !u.IsDiff() {
		current = nil
	}
	next := make(map[string]struct{}, len(current)+len(u.Ignored)+len(u.Add))
	for id := range current {
		next[id] = struct{}{}
	}
	for _, id := range u.Ignored {
		next[id] = struct{}{}
	}
	for _, id := range u.Add {
		next[id] = struct{}{}
	}
	for _, id := range u.Remove {
		delete(next, id)
	}
	return next
}

// MarshalJSON writes the whole form as {"ignored": [...]} even when the
// list is empty, so that an empty list replaces (and is not read as an
// empty diff).
func (u IgnoreUpdate) MarshalJSON() ([]byte, error) {
	if u.Ignored != nil {
		return Marshal(struct {
			Ignored []string `json:"ignored"`
		}{u.Ignored})
	}
	type diff IgnoreUpdate
	return Marshal(diff(u))
}

// UnmarshalJSON keeps an explicit empty "ignored" list as the whole form.
func (u *IgnoreUpdate) UnmarshalJSON(data []byte) error {
	type plain IgnoreUpdate
	var p struct {
		plain
		Ignored *[]string `json:"ignored"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	*u = IgnoreUpdate(p.plain)
	u.Ignored = nil
	if p.Ignored != nil {
		u.Ignored = *p.Ignored
		if u.Ignored == nil {
			u.Ignored = []string{}
		}
	}
	return nil
}
