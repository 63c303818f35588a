package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/phxnats/phxnats/authsvc/etf"
	"github.com/phxnats/phxnats/authsvc/phxtoken"
)

const tokenUsage = `usage:
  authsvc token sign --secret-key-base SKB --salt SALT [--signed-at UNIX_SECONDS] [--max-age SECONDS] DATA_JSON
  authsvc token verify --secret-key-base SKB --salt SALT [--max-age SECONDS] [--now UNIX_SECONDS] TOKEN

sign prints a Phoenix.Token for DATA_JSON: integers become integers, strings
binaries, objects maps with binary keys, arrays lists, and true/false/null
the atoms true/false/nil. --max-age (default 86400) is embedded in the token.

verify prints the token's data as JSON and exits 0, or prints expired,
invalid or missing on stderr and exits 1. --max-age overrides the embedded
max age, as Phoenix.Token.verify's :max_age does.

Times are in seconds and may be fractional; --max-age also takes
"infinity". Put -- before a DATA_JSON that starts with "-".
`

// usageError marks command-line mistakes, which exit with status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// runToken implements "authsvc token ..."; args start after the word
// "token". It returns the process exit status: 0 success, 1 a token that
// fails to verify (or a signing failure), 2 a usage error.
func runToken(args []string, stdout, stderr io.Writer) int {
	var err error
	switch {
	case len(args) == 0:
		err = usagef("missing subcommand")
	case args[0] == "sign":
		err = tokenSign(args[1:], stdout)
	case args[0] == "verify":
		err = tokenVerify(args[1:], stdout)
	case args[0] == "help" || args[0] == "-h" || args[0] == "--help":
		err = flag.ErrHelp
	default:
		err = usagef("unknown subcommand %q", args[0])
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, tokenUsage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "authsvc token: %s\n%s", ue.msg, tokenUsage)
		return 2
	case errors.Is(err, phxtoken.ErrExpired):
		fmt.Fprintln(stderr, "expired")
	case errors.Is(err, phxtoken.ErrInvalid):
		fmt.Fprintln(stderr, "invalid")
	case errors.Is(err, phxtoken.ErrMissing):
		fmt.Fprintln(stderr, "missing")
	default:
		fmt.Fprintf(stderr, "authsvc token: %v\n", err)
	}
	return 1
}

// tokenFlags holds the flags both subcommands share plus their own.
type tokenFlags struct {
	fs            *flag.FlagSet
	secretKeyBase string
	salt          string
	maxAge        string
	time          string // --signed-at for sign, --now for verify
}

func newTokenFlags(name, timeFlag, timeHelp string) *tokenFlags {
	f := &tokenFlags{fs: flag.NewFlagSet("token "+name, flag.ContinueOnError)}
	// runToken prints errors and usage itself.
	f.fs.SetOutput(io.Discard)
	f.fs.StringVar(&f.secretKeyBase, "secret-key-base", "", "Phoenix secret_key_base")
	f.fs.StringVar(&f.salt, "salt", "", "Phoenix.Token salt")
	f.fs.StringVar(&f.maxAge, "max-age", "", "max age in seconds, or infinity")
	f.fs.StringVar(&f.time, timeFlag, "", timeHelp)
	return f
}

// parse accepts flags before and after the single positional argument.
func (f *tokenFlags) parse(args []string, what string) (string, error) {
	var positional []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", err
			}
			return "", usageError{err.Error()}
		}
		if f.fs.NArg() == 0 {
			break
		}
		positional = append(positional, f.fs.Arg(0))
		args = f.fs.Args()[1:]
	}
	if len(positional) != 1 {
		return "", usagef("want exactly one %s argument, got %d", what, len(positional))
	}
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if f.secretKeyBase == "" {
		return "", usagef("--secret-key-base is required")
	}
	if !set["salt"] {
		return "", usagef("--salt is required")
	}
	return positional[0], nil
}

func (f *tokenFlags) signer() (*phxtoken.Signer, error) {
	s, err := phxtoken.New(phxtoken.Options{SecretKeyBases: []string{f.secretKeyBase}, Salt: f.salt})
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return s, nil
}

func tokenSign(args []string, stdout io.Writer) error {
	f := newTokenFlags("sign", "signed-at", "signing time in Unix seconds (default now)")
	dataJSON, err := f.parse(args, "DATA_JSON")
	if err != nil {
		return err
	}
	data, err := termFromJSON(dataJSON)
	if err == nil {
		_, err = etf.Encode(data) // duplicate keys, deep nesting
	}
	if err != nil {
		return usagef("DATA_JSON: %v", err)
	}
	signedAt := time.Now()
	if f.time != "" {
		if signedAt, err = parseUnix(f.time); err != nil {
			return usagef("--signed-at: %v", err)
		}
	}
	maxAge := phxtoken.DefaultMaxAge
	if f.maxAge != "" {
		if maxAge, err = parseMaxAge(f.maxAge); err != nil {
			return usagef("--max-age: %v", err)
		}
		if maxAge <= 0 {
			return usagef("--max-age must be positive")
		}
	}
	s, err := f.signer()
	if err != nil {
		return err
	}
	token, err := s.SignAt(data, signedAt, maxAge)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, token)
	return err
}

func tokenVerify(args []string, stdout io.Writer) error {
	f := newTokenFlags("verify", "now", "current time in Unix seconds (default now)")
	token, err := f.parse(args, "TOKEN")
	if err != nil {
		return err
	}
	now := time.Now()
	if f.time != "" {
		if now, err = parseUnix(f.time); err != nil {
			return usagef("--now: %v", err)
		}
	}
	var maxAge time.Duration // zero: the max age embedded in the token
	if f.maxAge != "" {
		if maxAge, err = parseMaxAge(f.maxAge); err != nil {
			return usagef("--max-age: %v", err)
		}
		if maxAge <= 0 {
			// Plug expires everything for max_age <= 0; VerifyAt reads
			// zero as "embedded", so pass a negative value instead.
			maxAge = -1
		}
	}
	s, err := f.signer()
	if err != nil {
		return err
	}
	data, err := s.VerifyAt(token, now, maxAge)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, data); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err = stdout.Write(buf.Bytes())
	return err
}

// parseSeconds reads a decimal number of seconds exactly, so fractional
// times such as 1700000000.5 do not pick up float rounding.
func parseSeconds(s string) (*big.Rat, error) {
	r, ok := new(big.Rat).SetString(s)
	if !ok || strings.Contains(s, "/") {
		return nil, fmt.Errorf("not a number of seconds: %q", s)
	}
	return r, nil
}

// parseUnix converts Unix seconds to a time, truncated to the millisecond
// as Plug's trunc(signed_at * 1000) does.
func parseUnix(s string) (time.Time, error) {
	r, err := parseSeconds(s)
	if err != nil {
		return time.Time{}, err
	}
	ms := new(big.Int).Quo(new(big.Int).Mul(r.Num(), big.NewInt(1000)), r.Denom())
	if !ms.IsInt64() {
		return time.Time{}, fmt.Errorf("out of range: %q", s)
	}
	return time.UnixMilli(ms.Int64()), nil
}

func parseMaxAge(s string) (time.Duration, error) {
	if s == "infinity" {
		return phxtoken.Infinity, nil
	}
	r, err := parseSeconds(s)
	if err != nil {
		return 0, err
	}
	if r.Sign() <= 0 {
		return 0, nil
	}
	ns := new(big.Int).Quo(new(big.Int).Mul(r.Num(), big.NewInt(int64(time.Second))), r.Denom())
	if !ns.IsInt64() || ns.Int64() == int64(phxtoken.Infinity) {
		return 0, fmt.Errorf("too large: %q", s)
	}
	// A positive max age below a nanosecond must not turn into zero.
	return max(time.Duration(ns.Int64()), 1), nil
}

// termFromJSON converts one JSON value into the term Phoenix would sign.
func termFromJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	v, err := readJSONTerm(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON value")
	}
	return v, nil
}

func readJSONTerm(dec *json.Decoder, depth int) (any, error) {
	if depth > etf.MaxDepth {
		return nil, fmt.Errorf("nested deeper than %d", etf.MaxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, errors.New("empty input")
		}
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '[' {
			list := []any{}
			for dec.More() {
				e, err := readJSONTerm(dec, depth+1)
				if err != nil {
					return nil, err
				}
				list = append(list, e)
			}
			_, err := dec.Token()
			return list, err
		}
		// A token stream, unlike map[string]any, keeps duplicate keys so
		// that etf.Encode can reject them instead of silently dropping one.
		m := etf.Map{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := readJSONTerm(dec, depth+1)
			if err != nil {
				return nil, err
			}
			m = append(m, etf.Pair{Key: k.(string), Value: v})
		}
		_, err := dec.Token()
		return m, err
	case json.Number:
		return numberTerm(t)
	case string:
		return t, nil
	case bool:
		if t {
			return etf.True, nil
		}
		return etf.False, nil
	case nil:
		return etf.Nil, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

func numberTerm(n json.Number) (any, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		i, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return nil, fmt.Errorf("bad integer %s", s)
		}
		if i.IsInt64() {
			return i.Int64(), nil
		}
		return i, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, fmt.Errorf("bad float %s", s)
	}
	return f, nil
}

// writeJSON prints a decoded term as JSON, keeping map order: atoms
// true/false/nil become JSON literals, other atoms strings, tuples arrays.
// Binaries that are not UTF-8 come out with U+FFFD replacements.
func writeJSON(buf *bytes.Buffer, t any) error {
	switch x := t.(type) {
	case int64:
		buf.WriteString(strconv.FormatInt(x, 10))
	case *big.Int:
		buf.WriteString(x.String())
	case float64:
		b, err := json.Marshal(x)
		if err != nil {
			return err
		}
		buf.Write(b)
	case string:
		writeJSONString(buf, x)
	case etf.Atom:
		switch x {
		case etf.True, etf.False:
			buf.WriteString(string(x))
		case etf.Nil:
			buf.WriteString("null")
		default:
			writeJSONString(buf, string(x))
		}
	case []any:
		return writeJSONArray(buf, x)
	case etf.Tuple:
		return writeJSONArray(buf, x)
	case etf.Map:
		buf.WriteByte('{')
		for i, p := range x {
			if i > 0 {
				buf.WriteByte(',')
			}
			key, err := jsonKey(p.Key)
			if err != nil {
				return err
			}
			writeJSONString(buf, key)
			buf.WriteByte(':')
			if err := writeJSON(buf, p.Value); err != nil {
				return err
			}
		}
		buf.WriteByte('}')
	default:
		return fmt.Errorf("cannot print %T as JSON", t)
	}
	return nil
}

func writeJSONArray(buf *bytes.Buffer, l []any) error {
	buf.WriteByte('[')
	for i, e := range l {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := writeJSON(buf, e); err != nil {
			return err
		}
	}
	buf.WriteByte(']')
	return nil
}

// jsonKey names a map key: binaries and atoms by their text, anything else
// (integers, tuples, ...) by its own JSON text.
func jsonKey(k any) (string, error) {
	switch x := k.(type) {
	case string:
		return x, nil
	case etf.Atom:
		return string(x), nil
	}
	var b bytes.Buffer
	err := writeJSON(&b, k)
	return b.String(), err
}

func writeJSONString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	// Tokens are printed for people and scripts, not embedded in HTML.
	enc.SetEscapeHTML(false)
	enc.Encode(s)               // cannot fail for a string
	buf.Truncate(buf.Len() - 1) // drop Encode's newline
}
