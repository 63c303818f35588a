package proto

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Room feeds: how a gateway gets its consumer of RoomStream without the
// right to create consumers itself.
//
// nats-server does not check a push consumer's deliver subject, nor the
// reply subject of a pull request, against the creator's permissions: a
// user that may create consumers or pull from them can aim the stream at
// any subject, phx.user.<id>.disconnect included. So the internet-facing
// gateway may do neither. It asks roomsvc (SubjectFeedCreate), which
// makes a push consumer whose deliver subject is always FeedSubject(key),
// a subject only gateways may subscribe to; the consumer's name is
// derived from the gateway's secret key, so only the gateway holding the
// key can have it deleted (SubjectFeedDelete), and a name seen on the wire
// gives no one the key.
const (
	// SubjectFeedCreate: request/reply, queue QueueRooms. A FeedRequest;
	// the reply is a FeedReply.
	SubjectFeedCreate = "phx.rooms.feed.create"
	// SubjectFeedDelete: request/reply, queue QueueRooms. A FeedRequest
	// (only the key and stream count); the reply is a FeedReply, Error empty once the
	// consumer is gone.
	SubjectFeedDelete = "phx.rooms.feed.delete"
	// FeedSubjectPrefix starts every feed's deliver subject; gateways
	// subscribe to FeedSubjectPrefix + "*".
	FeedSubjectPrefix = "phx.feed."
	// feedNamePrefix starts every feed consumer's name.
	feedNamePrefix = "feed_"
)

// Bounds of FeedRequest.Heartbeat, as nats.go enforces for its consumers.
const (
	MinFeedHeartbeat = 500 * time.Millisecond
	MaxFeedHeartbeat = 30 * time.Second
)

// FeedRequest asks for a consumer of RoomStream (or of PresenceStream).
type FeedRequest struct {
	// Stream is the stream to read: RoomStream when empty, or
	// PresenceStream (a gateway's reader of every presence). No other
	// stream is served.
	Stream string `json:"stream,omitempty"`
	// Key is the requester's secret (NewInbox-like random text, 16 to 64
	// characters of [A-Za-z0-9_-]); it names the consumer and its subject.
	Key string `json:"key"`
	// StartSeq is the stream sequence of the first message to deliver.
	StartSeq uint64 `json:"start_seq,omitempty"`
	// Heartbeat is the consumer's idle heartbeat, within MinFeedHeartbeat
	// and MaxFeedHeartbeat.
	Heartbeat time.Duration `json:"heartbeat,omitempty"`
}

// FeedReply answers a FeedRequest.
type FeedReply struct {
	// Consumer is the consumer's name, FeedName(key).
	Consumer string `json:"consumer,omitempty"`
	// Subject is where it delivers, FeedSubject(key).
	Subject string `json:"subject,omitempty"`
	// FirstSeq is the stream sequence of the first message it delivers:
	// StartSeq, or later when the stream no longer holds StartSeq.
	FirstSeq uint64 `json:"first_seq,omitempty"`
	Error    string `json:"error,omitempty"`
}

var feedKey = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// feedStream returns the stream req asks for, or an error for one that is
// not served.
func feedStream(req FeedRequest) (string, error) {
	switch req.Stream {
	case "", RoomStream:
		return RoomStream, nil
	case PresenceStream:
		return PresenceStream, nil
	}
	return "", fmt.Errorf("proto: no feed of stream %q", req.Stream)
}

// FeedName is the name of the consumer made for key: a hash of it.
func FeedName(key string) string {
	sum := sha256.Sum256([]byte("phxnats feed " + key))
	return feedNamePrefix + hex.EncodeToString(sum[:16])
}

// FeedSubject is where the consumer made for key delivers.
func FeedSubject(key string) string { return FeedSubjectPrefix + FeedName(key) }

// FeedConsumerConfig is the one configuration of a feed consumer: a push
// consumer of the whole stream starting at req.StartSeq, delivering to
// FeedSubject(req.Key) without acknowledgements, in memory on one node (its
// reader replaces it when that node fails), removed by the server a minute
// after its reader stopped listening.
func FeedConsumerConfig(req FeedRequest) (jetstream.ConsumerConfig, error) {
	if !feedKey.MatchString(req.Key) {
		return jetstream.ConsumerConfig{}, errors.New("proto: feed key must be 16-64 characters of [A-Za-z0-9_-]")
	}
	if req.Heartbeat < MinFeedHeartbeat || req.Heartbeat > MaxFeedHeartbeat {
		return jetstream.ConsumerConfig{}, fmt.Errorf("proto: feed heartbeat %s: must be within %s-%s", req.Heartbeat, MinFeedHeartbeat, MaxFeedHeartbeat)
	}
	if req.StartSeq == 0 {
		req.StartSeq = 1
	}
	return jetstream.ConsumerConfig{
		Name:              FeedName(req.Key),
		DeliverSubject:    FeedSubject(req.Key),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       req.StartSeq,
		AckPolicy:         jetstream.AckNonePolicy,
		IdleHeartbeat:     req.Heartbeat,
		Replicas:          1,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	}, nil
}

// CreateFeed makes the consumer req asks for on js and returns its reply
// (Error set when it could not). Creating it again with the same request
// is harmless.
func CreateFeed(ctx context.Context, js jetstream.JetStream, req FeedRequest) FeedReply {
	cfg, err := FeedConsumerConfig(req)
	if err != nil {
		return FeedReply{Error: err.Error()}
	}
	stream, err := feedStream(req)
	if err != nil {
		return FeedReply{Error: err.Error()}
	}
	cons, err := js.CreatePushConsumer(ctx, stream, cfg)
	if err != nil {
		return FeedReply{Error: fmt.Sprintf("consumer of %s: %v", stream, err)}
	}
	info := cons.CachedInfo()
	// The server starts at the stream's first message when the one asked
	// for is gone, and reports the skipped ones as delivered.
	return FeedReply{Consumer: info.Name, Subject: cfg.DeliverSubject, FirstSeq: max(info.Delivered.Stream+1, cfg.OptStartSeq)}
}

// DeleteFeed removes the consumer of RoomStream made for key; one already
// gone is not an error.
func DeleteFeed(ctx context.Context, js jetstream.JetStream, key string) FeedReply {
	return DeleteStreamFeed(ctx, js, FeedRequest{Key: key})
}

// DeleteStreamFeed removes the consumer made for req.Key of req.Stream;
// one already gone is not an error.
func DeleteStreamFeed(ctx context.Context, js jetstream.JetStream, req FeedRequest) FeedReply {
	key := req.Key
	if !feedKey.MatchString(key) {
		return FeedReply{Error: "proto: bad feed key"}
	}
	stream, err := feedStream(req)
	if err != nil {
		return FeedReply{Error: err.Error()}
	}
	err = js.DeleteConsumer(ctx, stream, FeedName(key))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return FeedReply{Error: err.Error()}
	}
	return FeedReply{Consumer: FeedName(key)}
}

// FeedHandlers are the handlers of SubjectFeedCreate and SubjectFeedDelete
// on js, for Serve in the queue group QueueRooms (roomsvc runs them).
func FeedHandlers(js jetstream.JetStream, timeout time.Duration, log *slog.Logger) map[string]nats.MsgHandler {
	handle := func(f func(context.Context, FeedRequest) FeedReply) nats.MsgHandler {
		return func(m *nats.Msg) {
			var req FeedRequest
			rep := FeedReply{Error: "proto: bad feed request"}
			if json.Unmarshal(m.Data, &req) == nil {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				rep = f(ctx, req)
				cancel()
			}
			Respond(m, rep, log)
		}
	}
	return map[string]nats.MsgHandler{
		SubjectFeedCreate: handle(func(ctx context.Context, req FeedRequest) FeedReply { return CreateFeed(ctx, js, req) }),
		SubjectFeedDelete: handle(func(ctx context.Context, req FeedRequest) FeedReply { return DeleteStreamFeed(ctx, js, req) }),
	}
}

// NewFeedKey draws a feed's secret key (FeedRequest.Key).
func NewFeedKey() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// RequestFeed asks roomsvc (SubjectFeedCreate) for the consumer req
// describes, or makes it with js when no roomsvc listens (tests, a bare
// nats-server), where the caller's permissions allow.
func RequestFeed(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, req FeedRequest) (FeedReply, error) {
	stream, err := feedStream(req)
	if err != nil {
		return FeedReply{}, err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return FeedReply{}, err
	}
	var rep FeedReply
	m, err := nc.RequestWithContext(ctx, SubjectFeedCreate, data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		rep = CreateFeed(ctx, js, req)
	case err != nil:
		return rep, fmt.Errorf("proto: consumer of %s: %w", stream, err)
	default:
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			return rep, fmt.Errorf("proto: consumer of %s: bad reply %q", stream, m.Data)
		}
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("proto: consumer of %s: %s", stream, rep.Error)
	}
	return rep, nil
}

// ReleaseFeed has roomsvc (SubjectFeedDelete) delete the consumer made
// for req.Key of req.Stream, or deletes it with js when no roomsvc
// listens, in the background (5 s at most): a consumer left behind ends
// at its inactivity threshold anyway.
func ReleaseFeed(nc *nats.Conn, js jetstream.JetStream, req FeedRequest) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		data, _ := json.Marshal(FeedRequest{Stream: req.Stream, Key: req.Key})
		if _, err := nc.RequestWithContext(ctx, SubjectFeedDelete, data); errors.Is(err, nats.ErrNoResponders) {
			DeleteStreamFeed(ctx, js, req)
		}
	}()
}
