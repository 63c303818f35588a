package phxtoken

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/phxnats/phxnats/authsvc/etf"
)

func fuzzSigner(f *testing.F) (*Signer, *vectorFile) {
	vf := loadVectors(f)
	return mustNew(f, Options{SecretKeyBases: []string{vf.SecretKeyBase}, Salt: vf.Salt}), vf
}

// FuzzVerify feeds arbitrary tokens to VerifyAt, which must never panic.
func FuzzVerify(f *testing.F) {
	s, vf := fuzzSigner(f)
	f.Add("")
	f.Add("..")
	f.Add("SFMyNTY.g2gDYSpuBgAAaOXPiwFiAAFRgA.DIEdDhm-RulZdoHpfOzt_9EsQnJgXvtJSIosttTnZt0")
	for _, v := range vf.Vectors {
		f.Add(v.Token)
	}
	for _, it := range vf.InvalidTokens {
		f.Add(it.Token)
	}
	now := time.UnixMilli(1700001000000)
	f.Fuzz(func(t *testing.T, token string) {
		data, err := s.VerifyAt(token, now, 0)
		if err == nil {
			if _, encErr := etf.Encode(data); encErr != nil {
				t.Fatalf("verified data %#v does not re-encode: %v", data, encErr)
			}
		}
	})
}

// FuzzVerifyPayload signs arbitrary payload bytes with the real key, so
// the fuzzer gets past the HMAC and exercises decoding and age checks.
func FuzzVerifyPayload(f *testing.F) {
	s, vf := fuzzSigner(f)
	f.Add([]byte{131, 104, 2, 97, 1, 97, 2}, int64(0), int64(0))
	for _, v := range vf.Vectors {
		f.Add(mustHexF(f, v.PayloadHex), v.SignedAtMs, int64(0))
	}
	f.Fuzz(func(t *testing.T, payload []byte, nowMs int64, maxAge int64) {
		token := signPayload(s.keys[0], protectedHS256, sha256.New, payload)
		_, err := s.VerifyAt(token, time.UnixMilli(nowMs), time.Duration(maxAge))
		if err == ErrMissing {
			t.Fatal("non-empty token reported missing")
		}
	})
}
