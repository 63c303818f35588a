// Package config maps the auth.* configuration keys to a token signer, for
// the authsvc binary and the one-process default alike.
package config

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/viper"

	"github.com/phxnats/phxnats/authsvc/auth"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/svckit"
)

// MinSecretLength is the shortest secret_key_base accepted (Phoenix's
// generator makes 64 bytes).
const MinSecretLength = 32

// ErrNoSecret means no auth.secret_key_base was configured.
var ErrNoSecret = errors.New("auth.secret_key_base is not set: set it (flag, CHAT_AUTH_SECRET_KEY_BASE or the config file); Phoenix's `mix phx.gen.secret` makes one")

// Settings are the auth.* keys.
func Settings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "auth.secret_key_base", Default: []string{}, Help: "token secrets, comma-separated: the first signs, all verify"},
		{Key: "auth.salt", Default: "user socket", Help: "Phoenix.Token salt"},
		{Key: "auth.max_age", Default: 1209600 * time.Second, Help: "token lifetime: tokens are signed with it, and no token older is accepted, whatever max age it carries"},
		{Key: "auth.clock_skew", Default: auth.DefaultClockSkew, Help: "tolerated clock difference between machines: tokens signed this far in the future are accepted, and this long after a ban's not-before time still refused"},
		{Key: "auth.bans_max_bytes", Default: auth.DefaultBansMaxBytes, Help: "size bound of the KV bucket phx_user_bans in bytes"},
	}
}

// StoreSettings are the keys of the authsvc binary alone (the one-process
// default has one server, so one replica).
func StoreSettings() []svckit.Setting {
	return []svckit.Setting{
		{Key: "auth.kv_replicas", Default: 1, Help: "replicas of the KV bucket phx_user_bans (3 on a NATS cluster)"},
		{Key: "auth.store_timeout", Default: 2 * time.Second, Help: "timeout of each read and write of phx_user_bans"},
	}
}

// BansOptions reads the keys of the ban bucket; replicas defaults to 1
// where auth.kv_replicas is not a setting.
func BansOptions(v *viper.Viper) (auth.BansOptions, error) {
	if err := svckit.Positive(v, "auth.bans_max_bytes"); err != nil {
		return auth.BansOptions{}, err
	}
	skew := v.GetDuration("auth.clock_skew")
	if skew < 0 || skew > time.Minute {
		return auth.BansOptions{}, fmt.Errorf("auth.clock_skew must be between 0 and 1m, got %s", v.GetString("auth.clock_skew"))
	}
	if skew == 0 {
		skew = -1 // none, rather than the default
	}
	return auth.BansOptions{Replicas: max(v.GetInt("auth.kv_replicas"), 1), MaxBytes: v.GetInt64("auth.bans_max_bytes"), ClockSkew: skew}, nil
}

// Secrets reads auth.secret_key_base; ErrNoSecret when there is none.
func Secrets(v *viper.Viper) ([]string, error) {
	secrets := svckit.List(v, "auth.secret_key_base")
	if len(secrets) == 0 {
		return nil, ErrNoSecret
	}
	for i, s := range secrets {
		if len(s) < MinSecretLength {
			return nil, fmt.Errorf("auth.secret_key_base: secret %d is %d bytes, at least %d are needed", i+1, len(s), MinSecretLength)
		}
	}
	return secrets, nil
}

// Signer builds the token signer from the auth.* keys and the given secrets.
func Signer(v *viper.Viper, secrets []string) (*phxtoken.Signer, error) {
	age := v.GetDuration("auth.max_age")
	if age <= 0 {
		return nil, fmt.Errorf("auth.max_age must be positive, got %v", age)
	}
	// The max age caps verification too: lowering it shortens tokens
	// already issued, and Phoenix tokens signed with :infinity expire.
	return phxtoken.New(phxtoken.Options{
		SecretKeyBases: secrets, Salt: v.GetString("auth.salt"), MaxAge: age, MaxAgeCap: age,
		ClockSkew: max(v.GetDuration("auth.clock_skew"), 0),
	})
}
