package config

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/svckit"
)

// auth.max_age bounds verification, not only signing: a token signed
// with :infinity by a Phoenix app, or with a longer max age before the
// setting was lowered, expires at auth.max_age.
func TestSignerCapsMaxAgeAtVerify(t *testing.T) {
	secret := "config-test-secret-key-base-0123456789-0123456789-0123456789"
	v, err := svckit.Load("authsvc", []string{"--auth-secret-key-base", secret, "--auth-max-age", "1h"}, Settings(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := Signer(v, []string{secret})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tests := []struct {
		name   string
		age    time.Duration
		maxAge time.Duration
		want   error
	}{
		{"infinity, fresh", time.Minute, phxtoken.Infinity, nil},
		{"infinity, older than auth.max_age", 2 * time.Hour, phxtoken.Infinity, phxtoken.ErrExpired},
		{"signed for two weeks, older than auth.max_age", 2 * time.Hour, 336 * time.Hour, phxtoken.ErrExpired},
		{"signed with auth.max_age, fresh", 59 * time.Minute, 0, nil},
		{"signed a little ahead (clock skew)", -2 * time.Second, 0, nil},
		{"signed far ahead", -time.Minute, 0, phxtoken.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token, err := signer.SignAt("alice", now.Add(-tt.age), tt.maxAge)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := signer.Verify(token); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestBansOptions(t *testing.T) {
	for _, tt := range []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"--auth-clock-skew", "0s"}, true},
		{[]string{"--auth-clock-skew", "-1s"}, false},
		{[]string{"--auth-clock-skew", "2m"}, false},
		{[]string{"--auth-bans-max-bytes", "0"}, false},
	} {
		v, err := svckit.Load("authsvc", tt.args, append(Settings(), StoreSettings()...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := BansOptions(v); (err == nil) != tt.ok {
			t.Errorf("%v: %v, want ok=%v", tt.args, err, tt.ok)
		}
	}
}
