// Package phxtoken signs and verifies Phoenix.Token tokens, byte-compatible
// with Phoenix.Token / Plug.Crypto.sign and verify, so tokens issued by a
// Phoenix app verify here and the other way round.
//
// A token is "SFMyNTY.<payload>.<signature>" (base64url without padding):
// the payload is term_to_binary({data, signed_at_ms, max_age_seconds}) and
// the signature is HMAC-SHA256 over "SFMyNTY.<payload>" keyed with
// PBKDF2-HMAC-SHA256(secret_key_base, salt, 1000 iterations, 32 bytes).
package phxtoken

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/phxnats/phxnats/authsvc/etf"
)

// Verification errors, matching Plug.Crypto's {:error, reason} atoms.
var (
	// ErrMissing is returned for an empty token (Plug: a nil token).
	ErrMissing = errors.New("phxtoken: missing")
	// ErrInvalid is returned for a malformed token, a bad signature, an
	// undecodable payload or a signing time in the future.
	ErrInvalid = errors.New("phxtoken: invalid")
	// ErrExpired is returned for a genuine token older than its max age.
	ErrExpired = errors.New("phxtoken: expired")
)

// ErrNotUserID is returned by UserID for data that is not a user id.
var ErrNotUserID = errors.New("phxtoken: token data is not a user id")

// DefaultMaxAge is Plug.Crypto's default max age, embedded in tokens
// signed without one.
const DefaultMaxAge = 86400 * time.Second

// Infinity as a max age means "never expires", Plug's max_age: :infinity.
const Infinity time.Duration = math.MaxInt64

// Key derivation parameters: Plug.Crypto's defaults.
const (
	keyIterations = 1000
	keyLength     = 32
)

// protectedHS256 is base64url("HS256"), the only header Phoenix signs with.
const protectedHS256 = "SFMyNTY"

// hashes maps the protected headers Plug.Crypto accepts to their digests.
var hashes = map[string]func() hash.Hash{
	protectedHS256: sha256.New,
	"SFMzODQ":      sha512.New384,
	"SFM1MTI":      sha512.New,
}

var b64 = base64.RawURLEncoding

// Options configure a Signer.
type Options struct {
	// SecretKeyBases are the Phoenix secret_key_base values. The first one
	// signs; all of them verify, so a new base can be rolled out first.
	SecretKeyBases []string
	// Salt is the Phoenix.Token salt, e.g. "user socket".
	Salt string
	// MaxAge is embedded in signed tokens; zero means DefaultMaxAge.
	// Whole seconds are embedded as an integer, like Phoenix does.
	MaxAge time.Duration
	// VerifyMaxAge, when non-zero, overrides the max age embedded in a
	// token, like Phoenix.Token.verify(..., max_age: ...). Phoenix apps
	// commonly verify socket tokens with 1209600 (two weeks). Negative
	// means every token is expired, as in Plug.
	VerifyMaxAge time.Duration
	// MaxAgeCap, when positive, is the oldest a token may be whatever max
	// age it carries (:infinity included) or VerifyMaxAge says: the max
	// age that verification applies is the smaller of the two. Lowering it
	// shortens the life of tokens already issued.
	MaxAgeCap time.Duration
	// ClockSkew is how far in the future a token's signing time may be
	// and still be accepted: the clocks of the machines that sign (a
	// Phoenix app, other authsvc instances) are a little apart. Zero
	// means none, as in plug_crypto.
	ClockSkew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Signer signs and verifies tokens for one salt. It is safe for
// concurrent use.
type Signer struct {
	keys         [][]byte // derived once: PBKDF2 is deliberately slow
	maxAge       time.Duration
	verifyMaxAge time.Duration
	maxAgeCap    time.Duration
	clockSkew    time.Duration
	now          func() time.Time
}

// New derives the keys for opts and returns a Signer.
func New(opts Options) (*Signer, error) {
	if len(opts.SecretKeyBases) == 0 {
		return nil, errors.New("phxtoken: no secret key base")
	}
	if opts.MaxAge < 0 || opts.MaxAgeCap < 0 || opts.ClockSkew < 0 {
		return nil, errors.New("phxtoken: negative MaxAge, MaxAgeCap or ClockSkew")
	}
	s := &Signer{
		maxAge:       opts.MaxAge,
		verifyMaxAge: opts.VerifyMaxAge,
		maxAgeCap:    opts.MaxAgeCap,
		clockSkew:    opts.ClockSkew,
		now:          opts.Now,
	}
	if s.maxAge == 0 {
		s.maxAge = DefaultMaxAge
	}
	if s.now == nil {
		s.now = time.Now
	}
	for i, skb := range opts.SecretKeyBases {
		if skb == "" {
			return nil, fmt.Errorf("phxtoken: secret key base %d is empty", i)
		}
		key, err := pbkdf2.Key(sha256.New, skb, []byte(opts.Salt), keyIterations, keyLength)
		if err != nil {
			return nil, fmt.Errorf("phxtoken: deriving key: %w", err)
		}
		s.keys = append(s.keys, key)
	}
	return s, nil
}

// Sign signs data now with the Signer's max age. data is any value
// etf.Encode accepts; user ids are usually a string or an integer.
func (s *Signer) Sign(data any) (string, error) {
	return s.SignAt(data, s.now(), 0)
}

// SignAt signs data as if at signedAt (kept to the millisecond) with
// maxAge embedded; zero maxAge means the Signer's, Infinity embeds
// :infinity, and fractional seconds embed a float as Plug would.
func (s *Signer) SignAt(data any, signedAt time.Time, maxAge time.Duration) (string, error) {
	if maxAge == 0 {
		maxAge = s.maxAge
	}
	if maxAge < 0 {
		return "", errors.New("phxtoken: negative max age")
	}
	payload, err := etf.Encode(etf.Tuple{data, signedAt.UnixMilli(), maxAgeTerm(maxAge)})
	if err != nil {
		return "", fmt.Errorf("phxtoken: encoding data: %w", err)
	}
	input := protectedHS256 + "." + b64.EncodeToString(payload)
	mac := hmac.New(sha256.New, s.keys[0])
	mac.Write([]byte(input))
	return input + "." + b64.EncodeToString(mac.Sum(nil)), nil
}

func maxAgeTerm(d time.Duration) any {
	switch {
	case d == Infinity:
		return etf.Atom("infinity")
	case d%time.Second == 0:
		return int64(d / time.Second)
	default:
		return d.Seconds()
	}
}

// Verify checks token at the Signer's clock and returns its data. The max
// age is Options.VerifyMaxAge if set, else the one embedded in the token.
func (s *Signer) Verify(token string) (any, error) {
	return s.VerifyAt(token, s.now(), s.verifyMaxAge)
}

// VerifySigned is Verify that also returns when the token was signed, for
// checks of the caller's own (a revocation's not-before time).
func (s *Signer) VerifySigned(token string) (any, time.Time, error) {
	data, signedMs, err := s.verify(token, s.now(), s.verifyMaxAge)
	return data, time.UnixMilli(signedMs), err
}

// VerifyAt checks token as if the clock read now, with Plug.Crypto's
// rules: maxAge zero uses the max age embedded in the token, Infinity never
// expires, a negative maxAge always expires; a token signed after now is
// ErrInvalid; one signed more than maxAge before now (to the millisecond,
// the boundary itself still valid) is ErrExpired. The legacy payloads
// {data, signed} and %{data: ..., signed: ...} count as max age 86400.
//
// Two deliberate differences from plug_crypto 2.1.1 (the version behind the
// Phoenix vectors in testdata): the future-signing check comes from
// plug_crypto's main branch (2.1.1 accepts such tokens), and an empty token
// is ErrMissing since Go has no nil string (Plug says invalid for "",
// missing for nil).
//
// Options.MaxAgeCap then caps the max age, and Options.ClockSkew moves
// "after now" that far into the future; both are zero in plug_crypto.
//
// The data is returned as decoded by etf.Decode.
func (s *Signer) VerifyAt(token string, now time.Time, maxAge time.Duration) (any, error) {
	data, _, err := s.verify(token, now, maxAge)
	return data, err
}

func (s *Signer) verify(token string, now time.Time, maxAge time.Duration) (any, int64, error) {
	if token == "" {
		return nil, 0, ErrMissing
	}
	payload, ok := s.open(token)
	if !ok {
		return nil, 0, ErrInvalid
	}
	term, err := etf.Decode(payload)
	if err != nil {
		return nil, 0, ErrInvalid
	}
	data, signed, embedded, ok := unpack(term)
	if !ok {
		return nil, 0, ErrInvalid
	}
	limit := durationLimit(maxAge)
	if maxAge == 0 {
		if limit, ok = embeddedLimit(embedded); !ok {
			return nil, 0, ErrInvalid
		}
	}
	if s.maxAgeCap > 0 {
		limit = limit.capped(durationLimit(s.maxAgeCap))
	}
	signedMs, err := checkAge(signed, limit, now.UnixMilli(), s.clockSkew.Milliseconds())
	if err != nil {
		return nil, 0, err
	}
	return data, signedMs, nil
}

// open checks the token's format and signature against every key and
// returns the raw payload.
func (s *Signer) open(token string) ([]byte, bool) {
	// Go's base64 decoder skips newlines; Elixir's Base rejects them.
	if strings.ContainsAny(token, "\r\n") {
		return nil, false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, false
	}
	newHash, ok := hashes[parts[0]]
	if !ok {
		return nil, false
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, false
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, false
	}
	input := []byte(token[:len(parts[0])+1+len(parts[1])])
	for _, key := range s.keys {
		mac := hmac.New(newHash, key)
		mac.Write(input)
		if hmac.Equal(mac.Sum(nil), sig) {
			return payload, true
		}
	}
	return nil, false
}

// unpack accepts the payload shapes Plug.Crypto.verify does.
func unpack(term any) (data, signed, maxAge any, ok bool) {
	legacyMaxAge := int64(86400)
	switch t := term.(type) {
	case etf.Tuple:
		switch len(t) {
		case 3:
			return t[0], t[1], t[2], true
		case 2:
			return t[0], t[1], legacyMaxAge, true
		}
	case etf.Map:
		// Like the Elixir pattern %{data: d, signed: s}, extra keys are fine.
		data, hasData := t.Get(etf.Atom("data"))
		signed, hasSigned := t.Get(etf.Atom("signed"))
		if hasData && hasSigned {
			return data, signed, legacyMaxAge, true
		}
	}
	return nil, nil, nil, false
}

// ageLimit is a resolved max age. Plug tests max_age <= 0 on the value in
// seconds before truncating to milliseconds, hence positive is separate.
type ageLimit struct {
	infinite bool
	positive bool
	ms       *big.Int // trunc(max_age * 1000)
}

// capped is the stricter of l and c (a positive, finite limit).
func (l ageLimit) capped(c ageLimit) ageLimit {
	switch {
	case !l.infinite && !l.positive:
		return l // always expired already
	case l.infinite || l.ms.Cmp(c.ms) > 0:
		return c
	}
	return l
}

func durationLimit(d time.Duration) ageLimit {
	return ageLimit{
		infinite: d == Infinity,
		positive: d > 0,
		ms:       big.NewInt(d.Milliseconds()),
	}
}

// embeddedLimit interprets the max age found in a token: integer or float
// seconds, or :infinity.
func embeddedLimit(v any) (ageLimit, bool) {
	switch x := v.(type) {
	case int64:
		ms := new(big.Int).Mul(big.NewInt(x), big.NewInt(1000))
		return ageLimit{positive: x > 0, ms: ms}, true
	case *big.Int:
		ms := new(big.Int).Mul(x, big.NewInt(1000))
		return ageLimit{positive: x.Sign() > 0, ms: ms}, true
	case float64:
		ms, _ := big.NewFloat(x * 1000).Int(nil) // Int truncates, like trunc/1
		return ageLimit{positive: x > 0, ms: ms}, true
	case etf.Atom:
		return ageLimit{infinite: true}, x == "infinity"
	}
	return ageLimit{}, false
}

// checkAge applies Plug.Crypto's validate_age/2, in its order, with a
// signing time up to skewMs in the future still valid. It returns the
// signing time in Unix milliseconds (clamped to the int64 range: only a
// token with an infinite max age can carry a time beyond it).
func checkAge(signed any, limit ageLimit, nowMs, skewMs int64) (int64, error) {
	var signedMs *big.Int
	switch x := signed.(type) {
	case int64:
		signedMs = big.NewInt(x)
	case *big.Int:
		signedMs = x
	}
	if limit.infinite {
		return clampMs(signedMs), nil
	}
	if !limit.positive {
		return 0, ErrExpired
	}
	if signedMs == nil {
		// Every non-number sorts after numbers in Erlang, so Plug's
		// "signed > now" makes it invalid. Float timestamps, which
		// nothing produces, are rejected too.
		return 0, ErrInvalid
	}
	now := big.NewInt(nowMs)
	if signedMs.Cmp(new(big.Int).Add(now, big.NewInt(skewMs))) > 0 {
		return 0, ErrInvalid
	}
	if new(big.Int).Add(signedMs, limit.ms).Cmp(now) < 0 {
		return 0, ErrExpired
	}
	return clampMs(signedMs), nil
}

func clampMs(ms *big.Int) int64 {
	switch {
	case ms == nil:
		return math.MinInt64 // no time: before any not-before time
	case ms.IsInt64():
		return ms.Int64()
	case ms.Sign() < 0:
		return math.MinInt64
	}
	return math.MaxInt64
}

// UserID turns verified token data into a user id: integers (which
// Phoenix apps often sign) become their decimal form, non-empty binaries
// are used as they are. Anything else is ErrNotUserID.
func UserID(data any) (string, error) {
	switch x := data.(type) {
	case int64:
		return strconv.FormatInt(x, 10), nil
	case *big.Int:
		if x != nil {
			return x.String(), nil
		}
	case string:
		if x != "" {
			return x, nil
		}
	}
	return "", ErrNotUserID
}
