package auth

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/proto"
	"github.com/phxnats/phxnats/proto/natstest"
)

func newTokens(t *testing.T, now func() time.Time, secrets ...string) PhoenixTokens {
	t.Helper()
	s, err := phxtoken.New(phxtoken.Options{SecretKeyBases: secrets, Salt: "user socket", MaxAge: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return PhoenixTokens{Signer: s}
}

func call[T any](t *testing.T, nc *nats.Conn, subject string, req any) T {
	t.Helper()
	data, _ := json.Marshal(req)
	m, err := nc.Request(subject, data, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var out T
	if err := json.Unmarshal(m.Data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestService(t *testing.T) {
	secret := "a-secret-key-base-that-is-long-enough-for-the-test-0123456789abc"
	nc := natstest.Connect(t, natstest.Start(t, natstest.Options{NoJetStream: true}))
	svc, err := Start(Options{Conn: nc, Tokens: newTokens(t, nil, secret)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Drain(context.Background()) })

	signed := call[proto.SignReply](t, nc, proto.SubjectAuthSign, proto.SignRequest{UserID: "alice"})
	if signed.Error != "" || signed.Token == "" {
		t.Fatalf("sign: %+v", signed)
	}
	if rep := call[proto.SignReply](t, nc, proto.SubjectAuthSign, proto.SignRequest{}); rep.Error == "" {
		t.Fatalf("signing an empty user id succeeded: %+v", rep)
	}

	old := newTokens(t, func() time.Time { return time.Now().Add(-2 * time.Hour) }, secret)
	expired, _ := old.SignUser("alice")
	other, _ := newTokens(t, nil, "another-secret-key-base-0123456789-0123456789-0123456789-abcdef").SignUser("alice")
	tampered := signed.Token[:len(signed.Token)-2] + "AA"
	if tampered == signed.Token {
		tampered = signed.Token[:len(signed.Token)-2] + "BB"
	}

	tests := []struct {
		name, token, user, err string
	}{
		{"good", signed.Token, "alice", ""},
		{"expired", expired, "", proto.TokenExpired},
		{"tampered", tampered, "", proto.TokenInvalid},
		{"other secret", other, "", proto.TokenInvalid},
		{"garbage", "bogus", "", proto.TokenInvalid},
		{"empty", "", "", proto.TokenMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := call[proto.VerifyReply](t, nc, proto.SubjectAuthVerify, proto.VerifyRequest{Token: tt.token})
			if rep.UserID != tt.user || rep.Error != tt.err {
				t.Fatalf("verify = %+v, want user %q error %q", rep, tt.user, tt.err)
			}
		})
	}
}

// A Phoenix app signs integer user ids; they verify as decimal strings.
func TestVerifyIntegerUserID(t *testing.T) {
	tok := newTokens(t, nil, "secret_key_base_example_64_bytessecret_key_base_example_64_bytes")
	signed, err := tok.Signer.Sign(int64(42))
	if err != nil {
		t.Fatal(err)
	}
	if user, _, err := tok.VerifyUser(signed); err != nil || user != "42" {
		t.Fatalf("VerifyUser = %q, %v", user, err)
	}
}
