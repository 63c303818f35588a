// Package config maps the rooms.* configuration keys to roomsvc's rules and
// store options, for the roomsvc binary and the one-process default alike.
package config

import (
	"fmt"
	"time"

	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/roomsvc/rooms"
	"github.com/phxnats/phxnats/svckit"
)

// Settings are the rooms.* keys of the roomsvc binary.
func Settings() []svckit.Setting {
	return append(append(RulesSettings(), LimitSettings()...), StoreSettings()...)
}

// LimitSettings bound what roomsvc keeps in JetStream KV; the one-process
// default has them too.
func LimitSettings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "rooms.ignore_max", Default: rooms.DefaultIgnoreMax, Help: "users one user may ignore; sizes the ignore bucket's largest value (513 bytes per entry)"},
		{Key: "rooms.members_max_bytes", Default: rooms.DefaultMembersMaxBytes, Help: "size bound of the KV bucket phx_room_members in bytes (grants fail when full)"},
		{Key: "rooms.ignores_max_bytes", Default: rooms.DefaultIgnoresMaxBytes, Help: "size bound of the KV bucket phx_user_ignores in bytes (ignores fail when full)"},
		{Key: "rooms.presence_max_bytes", Default: rooms.DefaultPresenceMaxBytes, Help: "size bound of the KV bucket phx_presence in bytes (a value per room and gateway)"},
		{Key: "rooms.history_max_msgs_per_room", Default: proto.DefaultHistoryMaxMsgsPerRoom, Help: "messages of room history kept per room in PHX_HISTORY; also caps {history: {last: N}}"},
		{Key: "rooms.history_max_age", Default: proto.DefaultHistoryMaxAge, Help: "how long PHX_HISTORY keeps a message"},
		{Key: "rooms.history_max_bytes", Default: proto.DefaultHistoryMaxBytes, Help: "size bound of PHX_HISTORY in bytes; past it the oldest messages of all rooms go first"},
	}
}

// Limits reads the LimitSettings into opts.
func Limits(v *viper.Viper, opts *rooms.StoreOptions) error {
	if err := svckit.Positive(v, "rooms.ignore_max", "rooms.members_max_bytes", "rooms.ignores_max_bytes",
		"rooms.history_max_msgs_per_room", "rooms.history_max_bytes", "rooms.presence_max_bytes"); err != nil {
		return err
	}
	if v.GetDuration("rooms.history_max_age") <= 0 {
		return fmt.Errorf("rooms.history_max_age must be positive, got %s", v.GetString("rooms.history_max_age"))
	}
	opts.PresenceMaxBytes = v.GetInt64("rooms.presence_max_bytes")
	opts.History.MaxMsgsPerRoom = v.GetInt64("rooms.history_max_msgs_per_room")
	opts.History.MaxAge = v.GetDuration("rooms.history_max_age")
	opts.History.MaxBytes = v.GetInt64("rooms.history_max_bytes")
	opts.IgnoreMax = v.GetInt("rooms.ignore_max")
	opts.MembersMaxBytes = v.GetInt64("rooms.members_max_bytes")
	opts.IgnoresMaxBytes = v.GetInt64("rooms.ignores_max_bytes")
	return nil
}

// RulesSettings are the keys of the chat rules.
func RulesSettings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "rooms.public", Default: []string{}, Help: "extra public topics; a trailing * matches a prefix (rooms:lobby is always public)"},
		{Key: "rooms.max_body_bytes", Default: rooms.DefaultMaxBodyBytes, Help: "longest new_msg body in bytes of UTF-8; its escaped broadcast must fit NATS's max_payload"},
		{Key: "rooms.announce_joins", Default: true, Help: "broadcast user_joined {user_id} when a logged-in user joins a room, to channels joined with {joins: true}"},
		{Key: "rooms.room_rate_limit", Default: rooms.DefaultRoomRateLimit, Help: "broadcasts per second one room may send, per roomsvc instance (bursts of 2 s; -1: no limit)"},
		{Key: "rooms.room_bytes_limit", Default: rooms.DefaultRoomBytesLimit, Help: "bytes of broadcasts per second one room may send, per roomsvc instance (bursts of 2 s, at least 1 MiB; -1: no limit)"},
	}
}

// StoreSettings are the keys of the KV store.
func StoreSettings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "rooms.kv_replicas", Default: 1, Help: "replicas of the membership and ignore KV buckets and of the broadcast stream PHX_ROOMS (3 on a NATS cluster)"},
		{Key: "rooms.stream_max_age", Default: proto.DefaultRoomStreamMaxAge, Help: "how long PHX_ROOMS keeps a broadcast for gateways catching up after a NATS reconnect"},
		{Key: "rooms.stream_max_bytes", Default: proto.DefaultRoomStreamMaxBytes, Help: "size bound of PHX_ROOMS in bytes; the oldest broadcasts go first"},
		{Key: "rooms.stream_max_msgs_per_room", Default: proto.DefaultRoomStreamMaxMsgsPerRoom, Help: "broadcasts PHX_ROOMS keeps per room; a flooding room loses its own oldest (-1: no bound)"},
		{Key: "rooms.store_timeout", Default: 2 * time.Second, Help: "timeout of each KV operation"},
	}
}

// Rules reads the chat rules.
func Rules(v *viper.Viper) (rooms.Rules, error) {
	if err := svckit.Positive(v, "rooms.max_body_bytes"); err != nil {
		return rooms.Rules{}, err
	}
	return rooms.Rules{
		PublicTopics:   svckit.List(v, "rooms.public"),
		MaxBodyBytes:   v.GetInt("rooms.max_body_bytes"),
		AnnounceJoins:  v.GetBool("rooms.announce_joins"),
		RoomRateLimit:  v.GetFloat64("rooms.room_rate_limit"),
		RoomBytesLimit: v.GetFloat64("rooms.room_bytes_limit"),
	}, nil
}

// StoreOptions reads the KV settings.
func StoreOptions(v *viper.Viper) (rooms.StoreOptions, error) {
	if err := svckit.Positive(v, "rooms.kv_replicas", "rooms.stream_max_bytes"); err != nil {
		return rooms.StoreOptions{}, err
	}
	if v.GetDuration("rooms.stream_max_age") <= 0 {
		return rooms.StoreOptions{}, fmt.Errorf("rooms.stream_max_age must be positive, got %s", v.GetString("rooms.stream_max_age"))
	}
	opts := rooms.StoreOptions{
		Replicas: v.GetInt("rooms.kv_replicas"),
		Stream: proto.RoomStreamOptions{
			MaxAge:         v.GetDuration("rooms.stream_max_age"),
			MaxBytes:       v.GetInt64("rooms.stream_max_bytes"),
			MaxMsgsPerRoom: v.GetInt64("rooms.stream_max_msgs_per_room"),
		},
	}
	return opts, Limits(v, &opts)
}
