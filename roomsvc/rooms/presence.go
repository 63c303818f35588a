package rooms

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// DefaultPresenceMaxBytes bounds the presence bucket (proto.PresenceBucket):
// a value per room and gateway, each at most a NATS message.
const DefaultPresenceMaxBytes = 256 << 20

// openPresence creates (or updates) proto.PresenceBucket: one key per room
// and gateway, written by the gateways with a per-message TTL, so the
// bucket allows them (LimitMarkerTTL), and an expired key leaves a marker
// that the gateways' consumers see as a deletion.
func openPresence(ctx context.Context, js jetstream.JetStream, opts StoreOptions) error {
	_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:         proto.PresenceBucket,
		Description:    "presences: key <room>.<gateway instance>, value that gateway's sockets in the room (proto.PresenceState)",
		History:        1,
		Replicas:       opts.Replicas,
		MaxBytes:       opts.PresenceMaxBytes,
		MaxValueSize:   proto.RoomStreamMaxMsgSize,
		LimitMarkerTTL: proto.PresenceMarkerTTL,
	})
	if err != nil {
		return fmt.Errorf("rooms: open KV bucket %q: %w", proto.PresenceBucket, err)
	}
	return nil
}

// Presence returns topic's presences, merged from every gateway's key of
// the presence bucket (one direct get).
func (s *Store) Presence(ctx context.Context, topic string) (proto.PresenceState, error) {
	entries, _, err := proto.LoadPresence(ctx, s.js.Conn(), topic, 0)
	if err != nil {
		return nil, err
	}
	states := make([]proto.PresenceState, 0, len(entries))
	for _, e := range entries {
		if e.State != nil {
			states = append(states, e.State)
		}
	}
	return proto.MergePresence(states...), nil
}

// handlePresenceList answers proto.SubjectPresenceList.
func (s *Service) handlePresenceList(m *nats.Msg) {
	var req proto.PresenceListRequest
	var rep proto.PresenceListReply
	switch err := json.Unmarshal(m.Data, &req); {
	case err != nil:
		rep.Error = "bad presence request: " + err.Error()
	case checkMember(req.Topic, "-") != nil:
		rep.Error = checkMember(req.Topic, "-").Error()
	default:
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
		rep.Presences, err = s.opts.Store.Presence(ctx, req.Topic)
		cancel()
		if err != nil {
			s.opts.Logger.Error("presence list failed", "topic", req.Topic, "err", err)
			rep.Error = "presence store unavailable"
		}
	}
	s.respond(m, rep)
}
