package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phxnats/phxnats/proto"
)

// ErrRevoked is returned by Bans.Check for a token signed before the
// user's not-before time.
var ErrRevoked = errors.New("auth: token revoked")

// DefaultClockSkew is how far apart the clocks of the machines that sign
// and verify tokens may be (auth.clock_skew).
const DefaultClockSkew = 5 * time.Second

// DefaultBansMaxBytes bounds proto.BanBucket (auth.bans_max_bytes): some
// 100,000 bans with the longest user ids.
const DefaultBansMaxBytes = 64 << 20

// BanMaxValueSize bounds one value of proto.BanBucket: a record is some
// 60 bytes of JSON.
const BanMaxValueSize = 256

// BansOptions configure OpenBans.
type BansOptions struct {
	// Replicas of the bucket: 1 on a single server, 3 on a cluster. Default 1.
	Replicas int
	// MaxBytes bounds the bucket; default DefaultBansMaxBytes.
	MaxBytes int64
	// ClockSkew: a token signed up to this long after a not-before time
	// is still refused, so that a token minted on a machine whose clock is
	// ahead, just before the ban, does not pass it. Default
	// DefaultClockSkew; negative means none.
	ClockSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Bans keeps per-user not-before times in proto.BanBucket, which authsvc
// owns: it creates the bucket, writes it on SubjectAuthBan and
// SubjectAuthUnban, and reads it at every verification. A key is deleted by
// nobody: once a ban is over, its record keeps the tokens issued before it
// refused; it may be removed by hand once auth.max_age has passed since
// its not-before time (every token it refuses has expired by then).
type Bans struct {
	kv   jetstream.KeyValue
	skew time.Duration
	now  func() time.Time
}

// banRecord is the value of a key of proto.BanBucket.
type banRecord struct {
	// NotBefore: tokens signed before it (Unix milliseconds) are refused.
	NotBefore int64 `json:"not_before_ms"`
	// Forever: every token is refused, until an unban.
	Forever bool `json:"forever,omitempty"`
}

// OpenBans creates proto.BanBucket where it does not exist yet, updates its
// limits where it does, and opens it.
func OpenBans(ctx context.Context, js jetstream.JetStream, opts BansOptions) (*Bans, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultBansMaxBytes
	}
	switch {
	case opts.ClockSkew == 0:
		opts.ClockSkew = DefaultClockSkew
	case opts.ClockSkew < 0:
		opts.ClockSkew = 0
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       proto.BanBucket,
		Description:  "per-user token not-before times: key <user>, written by authsvc",
		History:      1,
		Replicas:     opts.Replicas,
		MaxBytes:     opts.MaxBytes,
		MaxValueSize: BanMaxValueSize,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: open KV bucket %q: %w", proto.BanBucket, err)
	}
	return &Bans{kv: kv, skew: opts.ClockSkew, now: opts.Now}, nil
}

// Ban refuses user's tokens signed before now+d; d == 0 refuses every
// token until Unban.
func (b *Bans) Ban(ctx context.Context, user string, d time.Duration) (banRecord, error) {
	if d < 0 {
		return banRecord{}, errors.New("auth: negative ban duration")
	}
	rec := banRecord{NotBefore: b.now().Add(d).UnixMilli(), Forever: d == 0}
	return rec, b.put(ctx, user, rec)
}

// Unban accepts user's tokens signed from now on; older ones stay refused.
func (b *Bans) Unban(ctx context.Context, user string) (banRecord, error) {
	rec := banRecord{NotBefore: b.now().UnixMilli()}
	return rec, b.put(ctx, user, rec)
}

func (b *Bans) put(ctx context.Context, user string, rec banRecord) error {
	if err := proto.ValidUserID(user); err != nil {
		return err
	}
	data, _ := json.Marshal(rec)
	_, err := b.kv.Put(ctx, proto.EncodeKey(user), data)
	return err
}

// Check returns ErrRevoked when user is banned or the token was signed
// before (or within the clock skew after) the user's not-before time, and
// the store's error when it cannot tell.
func (b *Bans) Check(ctx context.Context, user string, signedAt time.Time) error {
	e, err := b.kv.Get(ctx, proto.EncodeKey(user))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return err
	}
	var rec banRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return fmt.Errorf("auth: ban record of %q: %w", user, err)
	}
	if rec.Forever || signedAt.UnixMilli() < rec.NotBefore+b.skew.Milliseconds() {
		return ErrRevoked
	}
	return nil
}

// Ping checks that the bucket answers, for readiness probes.
func (b *Bans) Ping(ctx context.Context) error {
	if _, err := b.kv.Status(ctx); err != nil {
		return fmt.Errorf("ban KV bucket: %w", err)
	}
	return nil
}
