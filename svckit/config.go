// Package svckit is what every phxnats service binary does the same way:
// configuration from flags, CHAT_* environment variables and a YAML file;
// JSON logs; a NATS connection that reconnects forever; an HTTP endpoint
// for /healthz, /readyz and /metrics; and a drain on SIGTERM.
package svckit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Setting is one configuration key. One table makes the flag (the key with
// '.' and '_' as '-'), the environment variable (CHAT_ + the key upper-cased
// with '.' as '_') and the YAML key, so they cannot drift apart.
type Setting struct {
	Key     string
	Default any // string, int, bool, float64, time.Duration or []string
	Help    string
}

// ErrHelp is returned by Load when --help was asked for; the usage has been printed.
var ErrHelp = pflag.ErrHelp

// Load reads settings for the command name from args, the environment and
// the YAML file named by --config, in that order of precedence, over the
// defaults.
func Load(name string, args []string, settings []Setting, usageOut io.Writer) (*viper.Viper, error) {
	v := viper.New()
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(usageOut)
	configFile := fs.String("config", "", "YAML config file (keys as in the README)")
	for _, s := range settings {
		flag := FlagName(s.Key)
		switch d := s.Default.(type) {
		case string:
			fs.String(flag, d, s.Help)
		case int:
			fs.Int(flag, d, s.Help)
		case bool:
			fs.Bool(flag, d, s.Help)
		case float64:
			fs.Float64(flag, d, s.Help)
		case time.Duration:
			fs.Duration(flag, d, s.Help)
		case []string:
			fs.StringSlice(flag, d, s.Help)
		default:
			return nil, fmt.Errorf("setting %s: unsupported default type %T", s.Key, d)
		}
		v.SetDefault(s.Key, s.Default)
		if err := v.BindPFlag(s.Key, fs.Lookup(flag)); err != nil {
			return nil, err
		}
	}
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "Usage: %s [flags]\n\nEvery flag is also a CHAT_* environment variable and a key of the --config YAML file.\n\n%s", name, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	v.SetEnvPrefix("CHAT")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if *configFile != "" {
		v.SetConfigFile(*configFile)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
	}
	return v, nil
}

// FlagName is the command-line flag of a setting key.
func FlagName(key string) string { return strings.NewReplacer(".", "-", "_", "-").Replace(key) }

// List reads a list setting. Environment variables arrive as one string,
// so commas separate items there too; blanks are dropped.
func List(v *viper.Viper, key string) []string {
	var out []string
	for _, item := range v.GetStringSlice(key) {
		for _, s := range strings.Split(item, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// Positive checks that each named integer setting is above zero.
func Positive(v *viper.Viper, keys ...string) error {
	var errs []error
	for _, k := range keys {
		if n := v.GetInt64(k); n <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", k, n))
		}
	}
	return errors.Join(errs...)
}

// LogSettings are the logging keys every command has.
func LogSettings() []Setting {
	return []Setting{
		{"log.level", "info", "debug, info, warn or error"},
		{"log.format", "json", "json or text"},
	}
}

// Logger builds the slog logger the log.* settings ask for, on stderr.
func Logger(v *viper.Viper) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.GetString("log.level"))); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f := v.GetString("log.format"); f {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("log.format must be json or text, got %q", f)
	}
}
