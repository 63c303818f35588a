package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/roomsvc/history"
)

// DefaultBucket is the JetStream KV bucket that holds room memberships.
const DefaultBucket = "phx_room_members"

// DefaultIgnoreBucket is the JetStream KV bucket that holds ignore lists:
// one key per user, its value the JSON array of ignored user ids, so that a
// join reads it with one Get.
const DefaultIgnoreBucket = "phx_user_ignores"

// Limits of the buckets (rooms.ignore_max, rooms.members_max_bytes,
// rooms.ignores_max_bytes).
const (
	// DefaultIgnoreMax is how many users one user may ignore.
	DefaultIgnoreMax = 1000
	// DefaultMembersMaxBytes bounds the membership bucket: a million
	// memberships of short ids, some 170,000 of the longest.
	DefaultMembersMaxBytes = 256 << 20
	// DefaultIgnoresMaxBytes bounds the ignore-list bucket.
	DefaultIgnoresMaxBytes = 256 << 20
	// MemberMaxValueSize bounds a value of the membership bucket (a time
	// stamp), with room for the headers of a delete.
	MemberMaxValueSize = 256
)

// IgnoreMaxValueSize is the largest value of the ignore-list bucket with
// lists of up to max ids: the JSON array of max ids of
// proto.MaxUserIDLength bytes, each byte escaped to two at worst (the rule
// of proto.ValidUserID leaves only '"', '\\' and U+2028/U+2029 to escape),
// and room for the headers of a compare-and-set.
func IgnoreMaxValueSize(max int) int { return 2 + max*(2*proto.MaxUserIDLength+3) + 256 }

// ErrIgnoreListFull is returned by SetIgnored when the list has
// StoreOptions.IgnoreMax entries.
var ErrIgnoreListFull = errors.New("rooms: ignore list full")

// Store keeps private-room memberships in a JetStream KV bucket, so they
// survive restarts and are shared by every roomsvc instance. Each membership
// is one key, "<room>.<user>", both parts escaped with proto.EncodeKey, which
// makes a membership check a single Get and a room's listing a filtered scan.
//
// The Store also publishes broadcasts into proto.RoomStream, which OpenStore
// creates beside the buckets: all of roomsvc's JetStream state is here.
type Store struct {
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	ignores   jetstream.KeyValue
	members   *memberCache
	ignoreMax int
	// history indexes proto.HistoryStream; historyMax is its per-room
	// bound, which also caps {"history": {"last": N}}.
	history    *history.Index
	historyMax int
}

// StoreOptions configure OpenStore.
type StoreOptions struct {
	// Bucket defaults to DefaultBucket.
	Bucket string
	// IgnoreBucket defaults to DefaultIgnoreBucket.
	IgnoreBucket string
	// Replicas is the bucket's replication factor: 1 on a single server,
	// 3 on a NATS cluster so that memberships outlive a node. Default 1.
	// The broadcast stream gets the same.
	Replicas int
	// Stream sizes proto.RoomStream; its Replicas is ignored.
	Stream proto.RoomStreamOptions
	// History sizes proto.HistoryStream, the room history; its Replicas
	// is ignored.
	History proto.HistoryOptions
	// IgnoreMax bounds the length of an ignore list; default
	// DefaultIgnoreMax. It sizes the bucket's largest value.
	IgnoreMax int
	// MembersMaxBytes and IgnoresMaxBytes bound the buckets; defaults
	// DefaultMembersMaxBytes and DefaultIgnoresMaxBytes.
	MembersMaxBytes int64
	IgnoresMaxBytes int64
	// PresenceMaxBytes bounds proto.PresenceBucket; default
	// DefaultPresenceMaxBytes.
	PresenceMaxBytes int64
	// MemberCacheSize bounds the cache of memberships that private-room
	// pushes are checked against; default DefaultMemberCacheSize.
	MemberCacheSize int
}

// OpenStore creates the KV buckets and proto.RoomStream where they do not
// exist yet and opens them.
func OpenStore(ctx context.Context, js jetstream.JetStream, opts StoreOptions) (*Store, error) {
	if opts.Bucket == "" {
		opts.Bucket = DefaultBucket
	}
	if opts.IgnoreBucket == "" {
		opts.IgnoreBucket = DefaultIgnoreBucket
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.IgnoreMax <= 0 {
		opts.IgnoreMax = DefaultIgnoreMax
	}
	if opts.MembersMaxBytes <= 0 {
		opts.MembersMaxBytes = DefaultMembersMaxBytes
	}
	if opts.IgnoresMaxBytes <= 0 {
		opts.IgnoresMaxBytes = DefaultIgnoresMaxBytes
	}
	if opts.PresenceMaxBytes <= 0 {
		opts.PresenceMaxBytes = DefaultPresenceMaxBytes
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       opts.Bucket,
		Description:  "private room memberships: key <room>.<user>",
		History:      1,
		Replicas:     opts.Replicas,
		MaxBytes:     opts.MembersMaxBytes,
		MaxValueSize: MemberMaxValueSize,
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: open KV bucket %q: %w", opts.Bucket, err)
	}
	ignores, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       opts.IgnoreBucket,
		Description:  "ignore lists: key <user>, value JSON array of ignored user ids",
		History:      1,
		Replicas:     opts.Replicas,
		MaxBytes:     opts.IgnoresMaxBytes,
		MaxValueSize: int32(IgnoreMaxValueSize(opts.IgnoreMax)),
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: open KV bucket %q: %w", opts.IgnoreBucket, err)
	}
	if err := openPresence(ctx, js, opts); err != nil {
		return nil, err
	}
	opts.Stream.Replicas = opts.Replicas
	if _, err := proto.EnsureRoomStream(ctx, js, opts.Stream); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	opts.History.Replicas = opts.Replicas
	if opts.History.MaxMsgsPerRoom <= 0 {
		opts.History.MaxMsgsPerRoom = proto.DefaultHistoryMaxMsgsPerRoom
	}
	if _, err := proto.EnsureHistoryStream(ctx, js, opts.History); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	hist, err := history.Open(ctx, js.Conn(), js, int(opts.History.MaxMsgsPerRoom), nil)
	if err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	members, err := watchMembers(kv, opts.MemberCacheSize)
	if err != nil {
		hist.Close()
		return nil, fmt.Errorf("rooms: watch KV bucket %q: %w", opts.Bucket, err)
	}
	return &Store{js: js, kv: kv, ignores: ignores, members: members, ignoreMax: opts.IgnoreMax,
		history: hist, historyMax: int(opts.History.MaxMsgsPerRoom)}, nil
}

// Close stops the Store's watches of the memberships and of the history.
func (s *Store) Close() {
	s.members.stop()
	s.history.Close()
}

// Broadcast publishes b into topic and returns once proto.RoomStream has
// stored it.
func (s *Store) Broadcast(ctx context.Context, topic string, b proto.Broadcast) error {
	return proto.PublishBroadcast(ctx, s.js, topic, b)
}

func memberKey(topic, user string) string {
	return proto.EncodeKey(topic) + "." + proto.EncodeKey(user)
}

// Grant makes user a member of topic. Granting twice is not an error.
func (s *Store) Grant(ctx context.Context, topic, user string) error {
	if err := checkMember(topic, user); err != nil {
		return err
	}
	_, err := s.kv.PutString(ctx, memberKey(topic, user), time.Now().UTC().Format(time.RFC3339))
	return err
}

// Revoke removes user from topic. Revoking a non-member is not an error.
func (s *Store) Revoke(ctx context.Context, topic, user string) error {
	if err := checkMember(topic, user); err != nil {
		return err
	}
	key := memberKey(topic, user)
	err := s.kv.Delete(ctx, key)
	// This instance stops trusting the membership at once; the others
	// when their watch delivers the delete.
	s.members.forget(key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// IsMember reports whether user is a member of topic, from the cache of
// memberships when it knows, else from the bucket (and then caches it).
// A revoke made through this instance is seen at once; one made through
// another instance once this instance's watch of the bucket delivers it.
func (s *Store) IsMember(ctx context.Context, topic, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	if s.members.has(memberKey(topic, user)) {
		return true, nil
	}
	return s.IsMemberNow(ctx, topic, user)
}

// IsMemberNow reports whether user is a member of topic, read from the
// bucket, never from the cache.
func (s *Store) IsMemberNow(ctx context.Context, topic, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	key := memberKey(topic, user)
	gen := s.members.generation()
	_, err := s.kv.Get(ctx, key)
	switch {
	case err == nil:
		s.members.add(key, gen)
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, err
	}
}

// Members lists the members of topic, sorted.
func (s *Store) Members(ctx context.Context, topic string) ([]string, error) {
	prefix := proto.EncodeKey(topic) + "."
	lister, err := s.kv.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		return nil, err
	}
	var users []string
	for key := range lister.Keys() {
		u, err := proto.DecodeKey(strings.TrimPrefix(key, prefix))
		if err != nil {
			continue // not written by us
		}
		users = append(users, u)
	}
	sort.Strings(users)
	return users, nil
}

func checkMember(topic, user string) error {
	if _, err := proto.EncodeTopic(topic); err != nil {
		return err
	}
	if !strings.HasPrefix(topic, TopicPrefix) || len(topic) == len(TopicPrefix) {
		return fmt.Errorf("rooms: %q is not a room topic (want %s<id>)", topic, TopicPrefix)
	}
	return proto.ValidUserID(user)
}

// Ignored returns the users that user ignores, sorted; none for "". It
// reads the bucket: no instance holds the lists in memory.
func (s *Store) Ignored(ctx context.Context, user string) ([]string, error) {
	list, _, err := s.ignored(ctx, user)
	return list, err
}

func (s *Store) ignored(ctx context.Context, user string) ([]string, uint64, error) {
	if user == "" {
		return []string{}, 0, nil
	}
	e, err := s.ignores.Get(ctx, proto.EncodeKey(user))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return []string{}, 0, nil
	case err != nil:
		return nil, 0, err
	}
	list := []string{}
	if err := json.Unmarshal(e.Value(), &list); err != nil {
		return nil, 0, fmt.Errorf("rooms: ignore list of %q: %w", user, err)
	}
	return list, e.Revision(), nil
}

// SetIgnored adds other to user's ignore list (ignore true) or removes it,
// and returns the new list and whether it changed. A list of
// StoreOptions.IgnoreMax entries takes no more (ErrIgnoreListFull).
// Concurrent changes are retried, not lost.
func (s *Store) SetIgnored(ctx context.Context, user, other string, ignore bool) ([]string, bool, error) {
	if err := errors.Join(proto.ValidUserID(user), proto.ValidUserID(other)); err != nil {
		return nil, false, err
	}
	key := proto.EncodeKey(user)
	for attempt := 0; attempt < 10; attempt++ {
		list, rev, err := s.ignored(ctx, user)
		if err != nil {
			return nil, false, err
		}
		i := sort.SearchStrings(list, other)
		has := i < len(list) && list[i] == other
		switch {
		case ignore && !has && len(list) >= s.ignoreMax:
			return list, false, fmt.Errorf("%w: %d users", ErrIgnoreListFull, s.ignoreMax)
		case ignore && !has:
			list = slices.Insert(list, i, other)
		case !ignore && has:
			list = slices.Delete(list, i, i+1)
		default:
			return list, false, nil
		}
		data, _ := proto.Marshal(list)
		if rev == 0 {
			_, err = s.ignores.Create(ctx, key, data)
		} else {
			_, err = s.ignores.Update(ctx, key, data, rev)
		}
		if err == nil {
			return list, true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return nil, false, err
		}
	}
	return nil, false, errors.New("rooms: ignore list changed too often concurrently, try again")
}

// isWrongSequence reports an optimistic-concurrency conflict on Update.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Ping checks that the membership bucket answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.kv.Status(ctx); err != nil {
		return fmt.Errorf("membership KV bucket: %w", err)
	}
	return nil
}
