package proto

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Presence: who is in a room, on which sockets, across every gateway, in
// the format of Phoenix.Presence (what phoenix.js's Presence class reads).
//
// Each gateway keeps the presences of its own sockets and writes them, per
// room, into the JetStream KV bucket PresenceBucket under the key
// PresenceKey(topic, instance): the value is a PresenceState holding that
// gateway's sockets only. instance is drawn afresh by every gateway process
// at start, so a restarted gateway never inherits its old keys. Every key
// is written with a per-message TTL (the Nats-TTL header) and rewritten
// well within it while it has presences: the keys of a gateway that died
// expire, and the bucket's subject delete marker (LimitMarkerTTL) tells
// every reader they are gone. A room's presence is the merge of its keys
// (MergePresence).
//
// Gateways read the bucket's stream with one consumer each, made by
// roomsvc (SubjectFeedCreate with FeedRequest.Stream PresenceStream), and
// snapshot a room with one direct get of the last value of each of its
// keys (LoadPresence). Other services ask roomsvc (SubjectPresenceList).
const (
	// PresenceBucket is the KV bucket of presences; roomsvc creates it at
	// start, with per-message TTLs allowed.
	PresenceBucket = "phx_presence"
	// PresenceStream is the stream behind PresenceBucket.
	PresenceStream = "KV_" + PresenceBucket
	// PresenceSubjectPrefix starts the subject of every key of the bucket.
	PresenceSubjectPrefix = "$KV." + PresenceBucket + "."
	// PresenceMarkerTTL is how long a deletion stays in the bucket as a
	// marker (the bucket's LimitMarkerTTL, and the TTL of a gateway's own
	// purge): long enough for any reader to see it.
	PresenceMarkerTTL = time.Minute

	// SubjectPresenceList: request/reply, queue QueueRooms. A
	// PresenceListRequest; roomsvc answers a PresenceListReply with the
	// room's presences merged from every gateway's key, read from the
	// bucket (it keeps nothing in memory).
	SubjectPresenceList = "phx.presence.list"
)

// Presence events, as phoenix.js's Presence class listens for them.
const (
	// PresenceStateEvent carries a whole PresenceState, pushed to one
	// channel after its join reply, with its join_ref.
	PresenceStateEvent = "presence_state"
	// PresenceDiffEvent carries a PresenceDiff, broadcast (join_ref null)
	// to every presence channel of the room.
	PresenceDiffEvent = "presence_diff"
)

// Meta is one socket's presence in a room, as Phoenix.Presence's metas.
type Meta struct {
	// PhxRef is unique per socket and room: NewPresenceRef.
	PhxRef string `json:"phx_ref"`
	// PhxRefPrev is the ref this meta replaced, when it is an update
	// (Phoenix's phx_ref_prev); the gateway never updates a meta today.
	PhxRefPrev string `json:"phx_ref_prev,omitempty"`
	// OnlineAt is when the socket joined, in Unix seconds written as a
	// string, as the Phoenix Presence guide tracks it
	// (inspect(System.system_time(:second))).
	OnlineAt string `json:"online_at"`
}

// Presence is one user's entry: a meta per socket of the user in the room.
type Presence struct {
	Metas []Meta `json:"metas"`
}

// PresenceState maps user ids to their presences: Phoenix's
// Presence.list/1 format, {"alice": {"metas": [{"phx_ref": ...}]}}.
type PresenceState map[string]Presence

// PresenceDiff is the payload of a presence_diff.
type PresenceDiff struct {
	Joins  PresenceState `json:"joins"`
	Leaves PresenceState `json:"leaves"`
}

// PresenceListRequest asks roomsvc for a room's presences.
type PresenceListRequest struct {
	Topic string `json:"topic"`
}

// PresenceListReply answers a PresenceListRequest: the room's presences
// ({} when nobody is there), or Error.
type PresenceListReply struct {
	Presences PresenceState `json:"presences,omitempty"`
	Error     string        `json:"error,omitempty"`
}

// MaxPresenceRefLength bounds a phx_ref read from the bucket.
const MaxPresenceRefLength = 64

var refCounter atomic.Uint32

// NewPresenceRef returns a new phx_ref: 12 bytes in URL-safe base64 (16
// characters), laid out as Phoenix's tracker makes them: the time in
// nanoseconds, then two random bytes and a counter.
func NewPresenceRef() string {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(b[8:10])
	binary.BigEndian.PutUint16(b[10:], uint16(refCounter.Add(1)))
	return base64.URLEncoding.EncodeToString(b[:])
}

// OnlineAt formats t as Meta.OnlineAt.
func OnlineAt(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// PresenceKey is the bucket key of instance's presences in topic:
// EncodeKey(topic) + "." + EncodeKey(instance).
func PresenceKey(topic, instance string) (string, error) {
	if _, err := EncodeTopic(topic); err != nil {
		return "", err
	}
	if instance == "" {
		return "", errors.New("proto: presence instance is empty")
	}
	return EncodeKey(topic) + "." + EncodeKey(instance), nil
}

// ParsePresenceKey splits a bucket key, or a subject of the bucket, into
// its topic and instance.
func ParsePresenceKey(key string) (topic, instance string, err error) {
	key = strings.TrimPrefix(key, PresenceSubjectPrefix)
	t, i, ok := strings.Cut(key, ".")
	if !ok || strings.Contains(i, ".") {
		return "", "", fmt.Errorf("%w: %q is not a presence key", ErrBadToken, key)
	}
	if topic, err = DecodeKey(t); err != nil {
		return "", "", err
	}
	if instance, err = DecodeKey(i); err != nil {
		return "", "", err
	}
	if _, err := EncodeTopic(topic); err != nil || instance == "" {
		return "", "", fmt.Errorf("%w: %q is not a presence key", ErrBadToken, key)
	}
	return topic, instance, nil
}

// DecodePresenceState parses a value of the bucket and checks it: every
// key a valid user id (ValidUserID) with at least one meta, every meta
// with a phx_ref of 1 to MaxPresenceRefLength bytes.
func DecodePresenceState(data []byte) (PresenceState, error) {
	var st PresenceState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("proto: presence value: %w", err)
	}
	if st == nil {
		return nil, errors.New("proto: presence value is not an object")
	}
	for user, p := range st {
		if err := ValidUserID(user); err != nil {
			return nil, fmt.Errorf("proto: presence value: %w", err)
		}
		if len(p.Metas) == 0 {
			return nil, fmt.Errorf("proto: presence value: %q has no metas", user)
		}
		for _, m := range p.Metas {
			if m.PhxRef == "" || len(m.PhxRef) > MaxPresenceRefLength {
				return nil, fmt.Errorf("proto: presence value: %q has a meta without a usable phx_ref", user)
			}
		}
	}
	return st, nil
}

// MergePresence merges the states of several gateways into the room's:
// each user's metas from all of them, in the order given.
func MergePresence(states ...PresenceState) PresenceState {
	out := make(PresenceState)
	for _, st := range states {
		for user, p := range st {
			cur := out[user]
			cur.Metas = append(cur.Metas, p.Metas...)
			out[user] = cur
		}
	}
	return out
}

// PresenceEntry is one gateway's key of a room, as read from the bucket.
type PresenceEntry struct {
	// Instance is the gateway process that wrote it.
	Instance string
	// Seq is its stream sequence.
	Seq uint64
	// State is its value; nil when the key was deleted or expired.
	State PresenceState
}

// PresenceDirectGet is the JetStream direct get API of PresenceStream.
const PresenceDirectGet = "$JS.API.DIRECT.GET." + PresenceStream

// maxPresenceGateways is nats-server's bound on the answers of one direct
// get of several subjects: a room's keys, one per gateway.
const maxPresenceGateways = 1024

// LoadPresence reads the last value of every key of topic in the bucket
// with one direct get (O(gateways), no walk of the stream), as of stream
// sequence upTo (0: now). It returns the keys, deleted ones included, and
// the stream sequence the answer is as of: any later change has a higher
// sequence. A value that does not parse is skipped.
func LoadPresence(ctx context.Context, nc *nats.Conn, topic string, upTo uint64) ([]PresenceEntry, uint64, error) {
	if _, err := EncodeTopic(topic); err != nil {
		return nil, 0, err
	}
	req, _ := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		UpToSeq   uint64   `json:"up_to_seq,omitempty"`
		Batch     int      `json:"batch"`
	}{[]string{PresenceSubjectPrefix + EncodeKey(topic) + ".*"}, upTo, maxPresenceGateways})
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(PresenceDirectGet, inbox, req); err != nil {
		return nil, 0, err
	}
	var entries []PresenceEntry
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("proto: read presence of %s: %w", topic, err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") != "" {
			switch m.Header.Get("Status") {
			case "204": // end of the batch
				as, _ := strconv.ParseUint(m.Header.Get("Nats-UpTo-Sequence"), 10, 64)
				return entries, as, nil
			case "404": // no key: nobody, as of now (or upTo)
				return nil, upTo, nil
			case "503":
				return nil, 0, fmt.Errorf("proto: read presence of %s: %w (is roomsvc started?)", topic, nats.ErrNoResponders)
			default:
				return nil, 0, fmt.Errorf("proto: read presence of %s: status %s %s", topic, m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
		e, ok := PresenceEntryOf(m.Header.Get("Nats-Subject"), m.Header, m.Data)
		if !ok {
			continue
		}
		e.Seq, _ = strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		entries = append(entries, e)
	}
}

// PresenceEntryOf reads a message of PresenceStream (a direct get's
// answer or a consumer's delivery): its key, and its value unless it is a
// deletion (a KV delete or purge, or the marker of an expired key). The
// sequence is left to the caller. ok is false for anything else.
func PresenceEntryOf(subject string, h nats.Header, data []byte) (e PresenceEntry, ok bool) {
	_, instance, err := ParsePresenceKey(subject)
	if err != nil {
		return e, false
	}
	e.Instance = instance
	if h.Get("KV-Operation") != "" || h.Get("Nats-Marker-Reason") != "" {
		return e, true // deleted
	}
	st, err := DecodePresenceState(data)
	if err != nil {
		return e, false
	}
	e.State = st
	return e, true
}

// SortedUsers returns the users of st in order, for listings.
func (st PresenceState) SortedUsers() []string {
	users := make([]string, 0, len(st))
	for u := range st {
		users = append(users, u)
	}
	slices.Sort(users)
	return users
}
