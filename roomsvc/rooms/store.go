package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// DefaultBucket is the JetStream KV bucket that holds room memberships.
const DefaultBucket = "phx_room_members"

// DefaultIgnoreBucket is the JetStream KV bucket that holds ignore lists:
// one key per user, its value the JSON array of ignored user ids, so that a
// join reads it with one Get.
const DefaultIgnoreBucket = "phx_user_ignores"

// Store keeps private-room memberships in a JetStream KV bucket, so they
// survive restarts and are shared by every roomsvc instance. Each membership
// is one key, "<room>.<user>", both parts escaped with proto.EncodeKey, which
// makes a membership check a single Get and a room's listing a filtered scan.
//
// The Store also publishes broadcasts into proto.RoomStream, which OpenStore
// creates beside the buckets: all of roomsvc's JetStream state is here.
type Store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	ignores jetstream.KeyValue
	mirror  *ignoreMirror
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
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "private room memberships: key <room>.<user>",
		History:     1,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: open KV bucket %q: %w", opts.Bucket, err)
	}
	ignores, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.IgnoreBucket,
		Description: "ignore lists: key <user>, value JSON array of ignored user ids",
		History:     1,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("rooms: open KV bucket %q: %w", opts.IgnoreBucket, err)
	}
	opts.Stream.Replicas = opts.Replicas
	if _, err := proto.EnsureRoomStream(ctx, js, opts.Stream); err != nil {
		return nil, fmt.Errorf("rooms: %w", err)
	}
	mirror, err := watchIgnores(ignores)
	if err != nil {
		return nil, fmt.Errorf("rooms: watch KV bucket %q: %w", opts.IgnoreBucket, err)
	}
	return &Store{js: js, kv: kv, ignores: ignores, mirror: mirror}, nil
}

// Close stops the Store's watch of the ignore lists.
func (s *Store) Close() { s.mirror.stop() }

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
	err := s.kv.Delete(ctx, memberKey(topic, user))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// IsMember reports whether user is a member of topic.
func (s *Store) IsMember(ctx context.Context, topic, user string) (bool, error) {
	if user == "" {
		return false, nil
	}
	_, err := s.kv.Get(ctx, memberKey(topic, user))
	switch {
	case err == nil:
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
	if user == "" {
		return errors.New("rooms: empty user id")
	}
	return nil
}

// Ignored returns the users that user ignores, sorted; none for "". It
// reads the in-memory mirror of the bucket once that has loaded (a join
// then costs no KV round trip), the bucket before.
func (s *Store) Ignored(ctx context.Context, user string) ([]string, error) {
	if list, ok := s.mirror.get(user); ok {
		return list, nil
	}
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
// and returns the new list. Concurrent changes are retried, not lost.
func (s *Store) SetIgnored(ctx context.Context, user, other string, ignore bool) ([]string, error) {
	if user == "" || other == "" {
		return nil, errors.New("rooms: empty user id")
	}
	key := proto.EncodeKey(user)
	for attempt := 0; attempt < 10; attempt++ {
		list, rev, err := s.ignored(ctx, user)
		if err != nil {
			return nil, err
		}
		i := sort.SearchStrings(list, other)
		has := i < len(list) && list[i] == other
		switch {
		case ignore && !has:
			list = slices.Insert(list, i, other)
		case !ignore && has:
			list = slices.Delete(list, i, i+1)
		default:
			return list, nil
		}
		data, _ := json.Marshal(list)
		if rev == 0 {
			_, err = s.ignores.Create(ctx, key, data)
		} else {
			_, err = s.ignores.Update(ctx, key, data, rev)
		}
		if err == nil {
			return list, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
			return nil, err
		}
	}
	return nil, errors.New("rooms: ignore list changed too often concurrently, try again")
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

// ignoreMirror is an in-memory copy of the ignore-list bucket, kept current
// by a KV watch (which nats.go resumes by itself after a NATS failure). An
// ignore list is a filter, not a permission, so the few milliseconds by
// which a mirror may trail a change made through another roomsvc are
// harmless; changes themselves still go to the bucket (compare-and-set in
// SetIgnored). Memory: one entry per user with a non-empty list.
type ignoreMirror struct {
	w jetstream.KeyWatcher

	mu    sync.RWMutex
	lists map[string][]string
	ready bool // the bucket's values at the start have all arrived
}

func watchIgnores(kv jetstream.KeyValue) (*ignoreMirror, error) {
	// The watch lives as long as the Store, not as a request.
	w, err := kv.WatchAll(context.Background())
	if err != nil {
		return nil, err
	}
	m := &ignoreMirror{w: w, lists: make(map[string][]string)}
	go m.run()
	return m, nil
}

func (m *ignoreMirror) run() {
	for e := range m.w.Updates() {
		if e == nil { // the end of the initial values
			m.mu.Lock()
			m.ready = true
			m.mu.Unlock()
			continue
		}
		user, err := proto.DecodeKey(e.Key())
		if err != nil {
			continue // not written by us
		}
		var list []string
		if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &list) != nil {
			continue
		}
		m.mu.Lock()
		if len(list) == 0 {
			delete(m.lists, user)
		} else {
			m.lists[user] = list
		}
		m.mu.Unlock()
	}
}

// get returns user's list, and false while the mirror is still loading.
// The list is shared: callers must not modify it.
func (m *ignoreMirror) get(user string) ([]string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.ready {
		return nil, false
	}
	if list, ok := m.lists[user]; ok {
		return list, true
	}
	return []string{}, true
}

func (m *ignoreMirror) stop() { _ = m.w.Stop() }
