package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// config is the resolved configuration of one run.
type config struct {
	NATSURL string
	// NKey is the nkey seed file to authenticate with; NKeyGiven says it
	// was configured rather than the default, which is used only when the
	// file exists and the URLs carry no user.
	NKey      string
	NKeyGiven bool
	Timeout   time.Duration
	// JSON is --json, for rooms members.
	JSON bool
	// BanFor is --for, for ban: how long; 0 means until unban.
	BanFor time.Duration
}

// setting is one configuration key: its YAML key, flag and environment
// variable, so that the three cannot drift apart.
type setting struct {
	key, flag, env string
}

var settings = []setting{
	{"nats_url", "nats-url", "CHAT_NATS_URL"},
	{"timeout", "timeout", "CHAT_TIMEOUT"},
	{"nats_nkey", "nats-nkey", "CHAT_NATS_NKEY"},
}

// defaultNKey is where `make run` (the one-process default, data_dir
// "data") generates its NATS key.
var defaultNKey = filepath.Join("data", "nats.nk")

// InboxPrefix is where chatctl receives replies: the operator user of
// deployments/nats may read only this inbox.
const inboxPrefix = "_INBOX_operator"

const defaultTimeout = 5 * time.Second

var errHelp = errors.New("help requested")

func newFlagSet() *pflag.FlagSet {
	fs := pflag.NewFlagSet("chatctl", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // run prints errors and usage itself
	fs.SortFlags = true
	fs.String("nats-url", nats.DefaultURL, "NATS server `URL`s, comma-separated (env CHAT_NATS_URL)")
	fs.Duration("timeout", defaultTimeout, "how long to wait to connect and for each answer (env CHAT_TIMEOUT)")
	fs.String("nats-nkey", defaultNKey, "nkey seed `FILE` to authenticate with; the default, make run's generated key, is used when it exists and the URL has no user (env CHAT_NATS_NKEY)")
	fs.String("config", "", "YAML `FILE` with the keys nats_url, nats_nkey and timeout")
	fs.Bool("json", false, "rooms members: print a JSON array")
	fs.Duration("for", 0, "ban: how long the ban lasts, e.g. 1h or 30m (default: until unban)")
	return fs
}

func flagUsages() string { return newFlagSet().FlagUsages() }

// loadConfig parses args and resolves every setting with the precedence
// flags > environment > config file > defaults, and returns the remaining
// positional arguments.
func loadConfig(args []string, env func(string) string) (config, []string, error) {
	fs := newFlagSet()
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return config{}, nil, errHelp
		}
		return config{}, nil, usagef("%v", err)
	}
	v := viper.New()
	v.SetDefault("nats_url", nats.DefaultURL)
	v.SetDefault("timeout", defaultTimeout)
	v.SetDefault("nats_nkey", defaultNKey)
	for _, s := range settings {
		// A bound flag wins over every other source only when given.
		if err := v.BindPFlag(s.key, fs.Lookup(s.flag)); err != nil {
			return config{}, nil, err
		}
	}
	if file, _ := fs.GetString("config"); file != "" {
		v.SetConfigFile(file)
		v.SetConfigType("yaml") // whatever the extension
		if err := v.ReadInConfig(); err != nil {
			return config{}, nil, invalidf("config file %s: %v", file, err)
		}
		known := map[string]bool{}
		for _, s := range settings {
			known[s.key] = true
		}
		var unknown []string
		for _, k := range v.AllKeys() {
			if !known[k] {
				unknown = append(unknown, k)
			}
		}
		if len(unknown) > 0 {
			sort.Strings(unknown)
			return config{}, nil, invalidf("config file %s: unknown key(s) %s (want nats_url, nats_nkey, timeout)", file, strings.Join(unknown, ", "))
		}
	}
	// The environment comes through env rather than viper.AutomaticEnv,
	// which reads os.Getenv directly, so that run can be tested without
	// touching the process environment. v.Set overrides everything, hence
	// the check that the flag was not given.
	for _, s := range settings {
		if val := env(s.env); val != "" && !fs.Changed(s.flag) {
			v.Set(s.key, val)
		}
	}

	cfg := config{NATSURL: strings.TrimSpace(v.GetString("nats_url"))}
	cfg.JSON, _ = fs.GetBool("json")
	cfg.BanFor, _ = fs.GetDuration("for")
	if fs.Changed("for") && cfg.BanFor < time.Second {
		return config{}, nil, usagef("--for: want a duration of at least 1s, got %s", cfg.BanFor)
	}
	cfg.NKey = strings.TrimSpace(v.GetString("nats_nkey"))
	cfg.NKeyGiven = cfg.NKey != defaultNKey
	if cfg.NATSURL == "" {
		return config{}, nil, invalidf("nats_url is empty")
	}
	// Every source becomes text first: a Duration default prints as "5s", a
	// YAML "2s" is a string, and a bare YAML number (which viper would read
	// as nanoseconds) is refused for want of a unit.
	raw := fmt.Sprint(v.Get("timeout"))
	d, err := time.ParseDuration(raw)
	if err != nil || d <= 0 {
		return config{}, nil, invalidf("timeout: want a positive duration such as 5s or 500ms, got %q", raw)
	}
	cfg.Timeout = d
	return cfg, fs.Args(), nil
}

// redactURLs hides credentials in NATS URLs before they go into messages.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			u.User = url.User("REDACTED")
			p = u.String()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// nkeyOption is the nats.Option that authenticates with cfg's nkey, or
// nil when there is none to use.
func nkeyOption(cfg config) (nats.Option, error) {
	if cfg.NKey == "" {
		return nil, nil
	}
	if !cfg.NKeyGiven {
		if _, err := os.Stat(cfg.NKey); err != nil || hasUser(cfg.NATSURL) {
			return nil, nil
		}
	}
	opt, err := nats.NkeyOptionFromSeed(cfg.NKey)
	if err != nil {
		return nil, fmt.Errorf("NATS key %s: %v", cfg.NKey, err)
	}
	return opt, nil
}

// hasUser reports whether one of the NATS URLs carries a user.
func hasUser(urls string) bool {
	for _, p := range strings.Split(urls, ",") {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			return true
		}
	}
	return false
}
