package phxtoken

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phxnats/phxnats/authsvc/etf"
)

// vectorsPath holds tokens signed by the real Phoenix.Token (see testdata/README.md).
var vectorsPath = filepath.Join("testdata", "phoenix_token.json")

type vectorFile struct {
	SecretKeyBase string `json:"secret_key_base"`
	Salt          string `json:"salt"`
	KeyDerivation struct {
		DerivedKeyHex string `json:"derived_key_hex"`
	} `json:"key_derivation"`
	Vectors []struct {
		Name           string       `json:"name"`
		Data           any          `json:"data"`
		SignedAtMs     int64        `json:"signed_at_ms"`
		SignMaxAge     *int64       `json:"sign_max_age"`
		EmbeddedMaxAge int64        `json:"embedded_max_age"`
		PayloadHex     string       `json:"payload_etf_hex"`
		SignatureHex   string       `json:"signature_hex"`
		Token          string       `json:"token"`
		Checks         []checkEntry `json:"checks"`
	} `json:"vectors"`
	InvalidTokens []struct {
		Name   string `json:"name"`
		Token  string `json:"token"`
		Expect struct {
			Error string `json:"error"`
		} `json:"expect"`
	} `json:"invalid_tokens"`
}

type checkEntry struct {
	NowMs        int64  `json:"now_ms"`
	VerifyMaxAge *int64 `json:"verify_max_age"`
	Expect       struct {
		OK    any    `json:"ok"`
		Error string `json:"error"`
	} `json:"expect"`
}

func readVectors() (*vectorFile, error) {
	raw, err := os.ReadFile(vectorsPath)
	if err != nil {
		return nil, err
	}
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&vf); err != nil {
		return nil, err
	}
	if len(vf.Vectors) == 0 || len(vf.InvalidTokens) == 0 {
		return nil, errors.New("vectors file has no vectors or no invalid tokens")
	}
	return &vf, nil
}

func loadVectors(t testing.TB) *vectorFile {
	t.Helper()
	vf, err := readVectors()
	if err != nil {
		t.Fatalf("Phoenix vectors: %v (they belong in the repository, see testdata/README.md)", err)
	}
	return vf
}

// fromJSON maps vector JSON to the terms Phoenix signed.
func fromJSON(t *testing.T, v any) any {
	t.Helper()
	switch x := v.(type) {
	case json.Number:
		n, ok := new(big.Int).SetString(string(x), 10)
		if !ok {
			t.Fatalf("non-integer number %s in vector", x)
		}
		return n
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = fromJSON(t, e)
		}
		return out
	case map[string]any:
		m := etf.Map{}
		for k, e := range x {
			m = append(m, etf.Pair{Key: k, Value: fromJSON(t, e)})
		}
		return m
	}
	return v
}

func mustHexF(f *testing.F, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

func seconds(p *int64) time.Duration {
	if p == nil {
		return 0
	}
	return time.Duration(*p) * time.Second
}

func mustNew(t testing.TB, opts Options) *Signer {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPhoenixVectors(t *testing.T) {
	vf := loadVectors(t)
	s := mustNew(t, Options{SecretKeyBases: []string{vf.SecretKeyBase}, Salt: vf.Salt})

	// The file has one derived key for its single secret_key_base and salt.
	if got := hex.EncodeToString(s.keys[0]); got != vf.KeyDerivation.DerivedKeyHex {
		t.Errorf("derived key = %s, want %s", got, vf.KeyDerivation.DerivedKeyHex)
	}
	for _, v := range vf.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			data := fromJSON(t, v.Data)
			token, err := s.SignAt(data, time.UnixMilli(v.SignedAtMs), seconds(v.SignMaxAge))
			if err != nil {
				t.Fatal(err)
			}
			if token != v.Token {
				t.Errorf("SignAt = %s\n      want %s", token, v.Token)
			}
			parts := strings.Split(v.Token, ".")
			payload, _ := b64.DecodeString(parts[1])
			if got := hex.EncodeToString(payload); got != v.PayloadHex {
				t.Errorf("vector payload %s != payload_etf_hex %s", got, v.PayloadHex)
			}
			sig, _ := b64.DecodeString(parts[2])
			if got := hex.EncodeToString(sig); got != v.SignatureHex {
				t.Errorf("vector signature %s != signature_hex %s", got, v.SignatureHex)
			}
			if len(v.Checks) == 0 {
				t.Fatal("vector has no checks")
			}
			for _, c := range v.Checks {
				got, err := s.VerifyAt(v.Token, time.UnixMilli(c.NowMs), seconds(c.VerifyMaxAge))
				switch c.Expect.Error {
				case "":
					if err != nil || !etf.Equal(got, fromJSON(t, c.Expect.OK)) {
						t.Errorf("now_ms %d max_age %v: got %#v, %v; want %v", c.NowMs, seconds(c.VerifyMaxAge), got, err, c.Expect.OK)
					}
				case "expired":
					if !errors.Is(err, ErrExpired) {
						t.Errorf("now_ms %d max_age %v: got %#v, %v; want ErrExpired", c.NowMs, seconds(c.VerifyMaxAge), got, err)
					}
				default:
					t.Fatalf("unexpected expectation %q", c.Expect.Error)
				}
			}
		})
	}
	for _, it := range vf.InvalidTokens {
		t.Run("invalid/"+it.Name, func(t *testing.T) {
			if it.Expect.Error != "invalid" {
				t.Fatalf("unexpected expectation %q", it.Expect.Error)
			}
			// The vectors were checked with max_age: :infinity.
			if got, err := s.VerifyAt(it.Token, time.UnixMilli(1700000001000), Infinity); !errors.Is(err, ErrInvalid) {
				t.Errorf("VerifyAt = %#v, %v; want ErrInvalid", got, err)
			}
		})
	}
}

// TestProtocolGolden is the [verified-local] example of PROTOCOL.md §2.
func TestProtocolGolden(t *testing.T) {
	s := mustNew(t, Options{
		SecretKeyBases: []string{strings.Repeat("secret_key_base_example_64_bytes", 2)},
		Salt:           "user auth",
	})
	token, err := s.SignAt(42, time.UnixMilli(1700000000000), 0)
	if err != nil {
		t.Fatal(err)
	}
	const want = "SFMyNTY.g2gDYSpuBgAAaOXPiwFiAAFRgA.DIEdDhm-RulZdoHpfOzt_9EsQnJgXvtJSIosttTnZt0"
	if token != want {
		t.Errorf("SignAt = %s, want %s", token, want)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no secret", Options{Salt: "s"}},
		{"empty secret", Options{SecretKeyBases: []string{"a", ""}, Salt: "s"}},
		{"negative max age", Options{SecretKeyBases: []string{"a"}, MaxAge: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.opts); err == nil {
				t.Error("New succeeded, want error")
			}
		})
	}
}

// signPayload signs raw payload bytes the way Plug does, so tests can
// craft payloads Phoenix would not produce.
func signPayload(key []byte, protected string, newHash func() hash.Hash, payload []byte) string {
	input := protected + "." + b64.EncodeToString(payload)
	mac := hmac.New(newHash, key)
	mac.Write([]byte(input))
	return input + "." + b64.EncodeToString(mac.Sum(nil))
}

func signTerm(t *testing.T, s *Signer, term any) string {
	t.Helper()
	payload, err := etf.Encode(term)
	if err != nil {
		t.Fatal(err)
	}
	return signPayload(s.keys[0], protectedHS256, sha256.New, payload)
}

func TestVerifyRules(t *testing.T) {
	const signed = int64(1700000000000)
	s := mustNew(t, Options{SecretKeyBases: []string{"k"}, Salt: "s"})
	at := func(ms int64) time.Time { return time.UnixMilli(ms) }
	tests := []struct {
		name   string
		token  string
		now    int64
		maxAge time.Duration
		want   error
	}{
		{"fresh", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 1000, 0, nil},
		{"at boundary", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 60000, 0, nil},
		{"past boundary", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 60001, 0, ErrExpired},
		{"signed in the future", signTerm(t, s, etf.Tuple{1, signed, 60}), signed - 1, 0, ErrInvalid},
		{"override max age", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 120000, 2 * time.Minute, nil},
		{"override truncates to ms", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 2, 2*time.Millisecond + 999*time.Microsecond, nil},
		{"negative override expires", signTerm(t, s, etf.Tuple{1, signed, 60}), signed, -1, ErrExpired},
		{"infinity override", signTerm(t, s, etf.Tuple{1, signed, 60}), signed + 1e12, Infinity, nil},
		{"infinity skips future check", signTerm(t, s, etf.Tuple{1, signed, 60}), 0, Infinity, nil},
		{"embedded zero expires", signTerm(t, s, etf.Tuple{1, signed, 0}), signed, 0, ErrExpired},
		{"embedded negative expires", signTerm(t, s, etf.Tuple{1, signed, -5}), signed, 0, ErrExpired},
		{"embedded infinity", signTerm(t, s, etf.Tuple{1, signed, etf.Atom("infinity")}), signed + 1e12, 0, nil},
		{"embedded float", signTerm(t, s, etf.Tuple{1, signed, 0.5}), signed + 500, 0, nil},
		{"embedded float expired", signTerm(t, s, etf.Tuple{1, signed, 0.5}), signed + 501, 0, ErrExpired},
		{"embedded tiny float", signTerm(t, s, etf.Tuple{1, signed, 0.0001}), signed + 1, 0, ErrExpired},
		{"embedded big", signTerm(t, s, etf.Tuple{1, signed, new(big.Int).Lsh(big.NewInt(1), 70)}), signed + 1e12, 0, nil},
		{"embedded garbage", signTerm(t, s, etf.Tuple{1, signed, "60"}), signed, 0, ErrInvalid},
		{"override ignores garbage", signTerm(t, s, etf.Tuple{1, signed, "60"}), signed, time.Minute, nil},
		{"signed is not a number", signTerm(t, s, etf.Tuple{1, etf.Atom("now"), 60}), signed, 0, ErrInvalid},
		{"signed is a float", signTerm(t, s, etf.Tuple{1, 1.0, 60}), signed, 0, ErrInvalid},
		{"signed huge", signTerm(t, s, etf.Tuple{1, new(big.Int).Lsh(big.NewInt(1), 70), 60}), signed, 0, ErrInvalid},
		{"signed hugely negative", signTerm(t, s, etf.Tuple{1, new(big.Int).Lsh(big.NewInt(-1), 70), 60}), signed, 0, ErrExpired},
		{"legacy tuple", signTerm(t, s, etf.Tuple{1, signed}), signed + 86400000, 0, nil},
		{"legacy tuple expired", signTerm(t, s, etf.Tuple{1, signed}), signed + 86400001, 0, ErrExpired},
		{"legacy map", signTerm(t, s, etf.Map{kv(etf.Atom("signed"), signed), kv(etf.Atom("data"), 1)}), signed + 86400000, 0, nil},
		{"legacy map extra key", signTerm(t, s, etf.Map{kv(etf.Atom("data"), 1), kv(etf.Atom("signed"), signed), kv("x", 1)}), signed, 0, nil},
		{"legacy map expired", signTerm(t, s, etf.Map{kv(etf.Atom("data"), 1), kv(etf.Atom("signed"), signed)}), signed + 86400001, 0, ErrExpired},
		{"map with binary keys", signTerm(t, s, etf.Map{kv("data", 1), kv("signed", signed)}), signed, 0, ErrInvalid},
		{"tuple of 4", signTerm(t, s, etf.Tuple{1, signed, 60, 0}), signed, 0, ErrInvalid},
		{"bare term", signTerm(t, s, 1), signed, 0, ErrInvalid},
		{"undecodable payload", signPayload(s.keys[0], protectedHS256, sha256.New, []byte{131, 121}), signed, 0, ErrInvalid},
		{"empty payload", signPayload(s.keys[0], protectedHS256, sha256.New, nil), signed, 0, ErrInvalid},
		{"HS384", signPayload(s.keys[0], "SFMzODQ", sha512.New384, mustEncode(t, etf.Tuple{1, signed, 60})), signed, 0, nil},
		{"HS512", signPayload(s.keys[0], "SFM1MTI", sha512.New, mustEncode(t, etf.Tuple{1, signed, 60})), signed, 0, nil},
		{"header/hash mismatch", signPayload(s.keys[0], "SFM1MTI", sha256.New, mustEncode(t, etf.Tuple{1, signed, 60})), signed, 0, ErrInvalid},
		{"unknown header", signPayload(s.keys[0], "SFMyNTZ", sha256.New, mustEncode(t, etf.Tuple{1, signed, 60})), signed, 0, ErrInvalid},
		{"empty", "", signed, 0, ErrMissing},
		{"dots only", "..", signed, 0, ErrInvalid},
		{"four parts", signTerm(t, s, etf.Tuple{1, signed, 60}) + ".x", signed, 0, ErrInvalid},
		{"newline", strings.Replace(signTerm(t, s, etf.Tuple{1, signed, 60}), ".", ".\n", 1), signed, 0, ErrInvalid},
		{"padding", signTerm(t, s, etf.Tuple{1, signed, 60}) + "=", signed, 0, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.VerifyAt(tt.token, at(tt.now), tt.maxAge)
			if !errors.Is(err, tt.want) || (tt.want == nil && !etf.Equal(got, 1)) {
				t.Errorf("VerifyAt = %#v, %v; want 1, %v", got, err, tt.want)
			}
		})
	}
}

func kv(k, v any) etf.Pair { return etf.Pair{Key: k, Value: v} }

func mustEncode(t *testing.T, term any) []byte {
	t.Helper()
	b, err := etf.Encode(term)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestKeyRotation(t *testing.T) {
	old := mustNew(t, Options{SecretKeyBases: []string{"old"}, Salt: "s"})
	rotated := mustNew(t, Options{SecretKeyBases: []string{"new", "old"}, Salt: "s"})
	otherSalt := mustNew(t, Options{SecretKeyBases: []string{"new", "old"}, Salt: "t"})
	now := time.UnixMilli(1700000000000)

	oldToken, _ := old.SignAt("u1", now, 0)
	newToken, _ := rotated.SignAt("u1", now, 0)
	tests := []struct {
		name   string
		signer *Signer
		token  string
		want   error
	}{
		{"old token, rotated signer", rotated, oldToken, nil},
		{"new token, rotated signer", rotated, newToken, nil},
		{"new token, old signer", old, newToken, ErrInvalid},
		{"other salt", otherSalt, oldToken, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.signer.VerifyAt(tt.token, now, 0); !errors.Is(err, tt.want) {
				t.Errorf("VerifyAt error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestClockAndMaxAge(t *testing.T) {
	clock := time.UnixMilli(1700000000123)
	s := mustNew(t, Options{
		SecretKeyBases: []string{"k"},
		Salt:           "s",
		MaxAge:         time.Hour,
		VerifyMaxAge:   2 * time.Hour,
		Now:            func() time.Time { return clock },
	})
	token, err := s.Sign("u1")
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := b64.DecodeString(strings.Split(token, ".")[1])
	if term, _ := etf.Decode(payload); !etf.Equal(term, etf.Tuple{"u1", clock.UnixMilli(), 3600}) {
		t.Errorf("payload = %#v", term)
	}

	tests := []struct {
		name  string
		after time.Duration
		want  error
	}{
		{"fresh", 0, nil},
		{"past embedded, within VerifyMaxAge", 90 * time.Minute, nil},
		{"past VerifyMaxAge", 2*time.Hour + time.Millisecond, ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock = time.UnixMilli(1700000000123).Add(tt.after)
			if _, err := s.Verify(token); !errors.Is(err, tt.want) {
				t.Errorf("Verify error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestSignAtMaxAge(t *testing.T) {
	s := mustNew(t, Options{SecretKeyBases: []string{"k"}, Salt: "s"})
	tests := []struct {
		name   string
		maxAge time.Duration
		want   any
	}{
		{"default", 0, 86400},
		{"whole seconds", time.Minute, 60},
		{"fractional", 1500 * time.Millisecond, 1.5},
		{"infinity", Infinity, etf.Atom("infinity")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := s.SignAt(1, time.UnixMilli(0), tt.maxAge)
			if err != nil {
				t.Fatal(err)
			}
			payload, _ := b64.DecodeString(strings.Split(token, ".")[1])
			term, _ := etf.Decode(payload)
			if got := term.(etf.Tuple)[2]; !etf.Equal(got, tt.want) {
				t.Errorf("embedded max age = %#v, want %#v", got, tt.want)
			}
		})
	}
	if _, err := s.SignAt(1, time.UnixMilli(0), -time.Second); err == nil {
		t.Error("negative max age accepted")
	}
	if _, err := s.SignAt(make(chan int), time.UnixMilli(0), 0); err == nil {
		t.Error("unencodable data accepted")
	}
}

func TestUserID(t *testing.T) {
	tests := []struct {
		data    any
		want    string
		wantErr bool
	}{
		{int64(42), "42", false},
		{int64(-7), "-7", false},
		{new(big.Int).Lsh(big.NewInt(1), 64), "18446744073709551616", false},
		{"user-abc", "user-abc", false},
		{"", "", true},
		{etf.Atom("admin"), "", true},
		{1.5, "", true},
		{[]any{}, "", true},
		{etf.Map{}, "", true},
		{(*big.Int)(nil), "", true},
	}
	for _, tt := range tests {
		got, err := UserID(tt.data)
		if got != tt.want || (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrNotUserID)) {
			t.Errorf("UserID(%#v) = %q, %v; want %q, error %v", tt.data, got, err, tt.want, tt.wantErr)
		}
	}
}

// MaxAgeCap bounds every token's life, whatever max age it carries or the
// verifier asks for; ClockSkew admits tokens signed a little in the future.
func TestMaxAgeCapAndClockSkew(t *testing.T) {
	now := time.UnixMilli(1700000000123)
	s := mustNew(t, Options{
		SecretKeyBases: []string{"k"},
		Salt:           "s",
		MaxAgeCap:      time.Hour,
		ClockSkew:      5 * time.Second,
		Now:            func() time.Time { return now },
	})
	tests := []struct {
		name     string
		signedAt time.Time
		maxAge   time.Duration
		want     error
	}{
		{"infinity, fresh", now.Add(-time.Minute), Infinity, nil},
		{"infinity, older than the cap", now.Add(-time.Hour - time.Millisecond), Infinity, ErrExpired},
		{"long max age, at the cap", now.Add(-time.Hour), 1000 * time.Hour, nil},
		{"long max age, older than the cap", now.Add(-2 * time.Hour), 1000 * time.Hour, ErrExpired},
		{"shorter max age still applies", now.Add(-10 * time.Minute), 5 * time.Minute, ErrExpired},
		{"signed within the skew ahead", now.Add(5 * time.Second), time.Hour, nil},
		{"signed past the skew ahead", now.Add(5*time.Second + time.Millisecond), time.Hour, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := s.SignAt("u1", tt.signedAt, tt.maxAge)
			if err != nil {
				t.Fatal(err)
			}
			_, signed, err := s.VerifySigned(token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("VerifySigned error = %v, want %v", err, tt.want)
			}
			if err == nil && !signed.Equal(tt.signedAt.Truncate(time.Millisecond)) {
				t.Fatalf("signed at %v, want %v", signed, tt.signedAt)
			}
		})
	}
	// A verifier's own max age cannot lift the cap either.
	lax := mustNew(t, Options{SecretKeyBases: []string{"k"}, Salt: "s", VerifyMaxAge: 1000 * time.Hour, MaxAgeCap: time.Hour, Now: func() time.Time { return now }})
	token, _ := lax.SignAt("u1", now.Add(-2*time.Hour), 0)
	if _, err := lax.Verify(token); !errors.Is(err, ErrExpired) {
		t.Fatalf("VerifyMaxAge past the cap: %v, want expired", err)
	}
}
