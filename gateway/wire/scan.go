package wire

import (
	"strings"
	"unicode/utf8"
)

// maxDepth bounds array/object nesting so a hostile frame cannot drive the
// recursive scanner into a huge stack; it is the limit encoding/json uses.
const maxDepth = 10000

// The scanner accepts a strict subset of what json.Valid accepts: on top of
// RFC 8259 it rejects invalid UTF-8 and unpaired \uD800-\uDFFF escapes,
// because Jason (Phoenix's decoder) rejects both and such frames close the
// socket there.

// isSpace reports JSON insignificant whitespace.
func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func skipSpace(data []byte, i int) int {
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	return i
}

// span locates a decoded string field inside the frame: data[start:end] is
// the raw content between the quotes.
type span struct {
	start, end int
	escaped    bool
	null       bool
}

// scanString validates the JSON string opening at data[i] and returns the
// index just past its closing quote and whether it contains escapes (which
// decides whether the raw bytes can be used as the value directly).
func scanString(data []byte, i int) (int, bool, error) {
	i++
	escaped := false
	for {
		for i < len(data) && !strSpecial[data[i]] {
			i++
		}
		if i >= len(data) {
			return 0, false, malformed("unterminated string at offset %d", i)
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				return 0, false, malformed("unterminated string at offset %d", i)
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(data, i+2)
				if !ok {
					return 0, false, malformed("bad \\u escape at offset %d", i)
				}
				switch {
				case r >= 0xD800 && r < 0xDC00:
					lo, ok := -1, false
					if i+7 < len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
						lo, ok = hex4(data, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return 0, false, malformed("unpaired surrogate escape at offset %d", i)
					}
					i += 12
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, false, malformed("unpaired surrogate escape at offset %d", i)
				default:
					i += 6
				}
			default:
				return 0, false, malformed("bad escape at offset %d", i)
			}
		case c < 0x20:
			return 0, false, malformed("control character in string at offset %d", i)
		default:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, false, malformed("invalid UTF-8 at offset %d", i)
			}
			i += size
		}
	}
}

// hex4 parses the four hex digits at data[i:i+4].
func hex4(data []byte, i int) (int, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	r := 0
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | int(c)
	}
	return r, true
}

// scanStringField parses a string-or-null field at data[i] (whitespace
// already skipped). allowNull distinguishes refs from topic/event.
func scanStringField(data []byte, i int, name string, allowNull bool) (span, int, error) {
	if i < len(data) {
		switch data[i] {
		case '"':
			end, esc, err := scanString(data, i)
			if err != nil {
				return span{}, 0, err
			}
			return span{start: i + 1, end: end - 1, escaped: esc}, end, nil
		case 'n':
			if allowNull && hasLiteral(data, i, "null") {
				return span{null: true}, i + 4, nil
			}
		}
	}
	if allowNull {
		return span{}, 0, malformed("%s must be a string or null (offset %d)", name, i)
	}
	return span{}, 0, malformed("%s must be a string (offset %d)", name, i)
}

func hasLiteral(data []byte, i int, lit string) bool {
	return len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit
}

// skipValue validates the JSON value starting at data[i] (whitespace already
// skipped) and returns the index just past it.
func skipValue(data []byte, i, depth int) (int, error) {
	if i >= len(data) {
		return 0, malformed("unexpected end of frame")
	}
	switch c := data[i]; c {
	case '"':
		end, _, err := scanString(data, i)
		return end, err
	case '{':
		return skipObject(data, i, depth+1)
	case '[':
		return skipArray(data, i, depth+1)
	case 't':
		if hasLiteral(data, i, "true") {
			return i + 4, nil
		}
	case 'f':
		if hasLiteral(data, i, "false") {
			return i + 5, nil
		}
	case 'n':
		if hasLiteral(data, i, "null") {
			return i + 4, nil
		}
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return scanNumber(data, i)
		}
	}
	return 0, malformed("invalid JSON at offset %d", i)
}

func skipArray(data []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, malformed("JSON nested too deeply")
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = skipValue(data, i, depth); err != nil {
			return 0, err
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return 0, malformed("unexpected end of frame")
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			return i + 1, nil
		default:
			return 0, malformed("expected ',' or ']' at offset %d", i)
		}
	}
}

func skipObject(data []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, malformed("JSON nested too deeply")
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return 0, malformed("expected object key at offset %d", i)
		}
		var err error
		if i, _, err = scanString(data, i); err != nil {
			return 0, err
		}
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ':' {
			return 0, malformed("expected ':' at offset %d", i)
		}
		if i, err = skipValue(data, skipSpace(data, i+1), depth); err != nil {
			return 0, err
		}
		i = skipSpace(data, i)
		if i >= len(data) {
			return 0, malformed("unexpected end of frame")
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, malformed("expected ',' or '}' at offset %d", i)
		}
	}
}

// scanNumber validates -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; the
// caller checks that a delimiter follows, which rejects "01" and "1x".
func scanNumber(data []byte, i int) (int, error) {
	start := i
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i+1)
	default:
		return 0, malformed("invalid number at offset %d", start)
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return 0, malformed("invalid number at offset %d", start)
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return 0, malformed("invalid number at offset %d", start)
		}
		i = j
	}
	return i, nil
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// unquote decodes the content of a validated JSON string that contains
// escapes. Validation already guaranteed well-formed escapes and paired
// surrogates, so no error paths remain.
func unquote(raw []byte) string {
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			j := i + 1
			for j < len(raw) && raw[j] != '\\' {
				j++
			}
			b.Write(raw[i:j])
			i = j
			continue
		}
		switch raw[i+1] {
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			if r >= 0xD800 && r < 0xDC00 {
				lo, _ := hex4(raw, i+8)
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 6
			}
			b.WriteRune(rune(r))
			i += 6
			continue
		default: // '"', '\\', '/'
			b.WriteByte(raw[i+1])
		}
		i += 2
	}
	return b.String()
}

// Indexes of the string fields in the span array handed to setStrings.
const (
	fJoinRef = iota
	fRef
	fTopic
	fEvent
	nFields
)

// setStrings turns decoded field spans into m's string fields. In the common
// case (no escapes, fields close together, as in every V2 frame) it converts
// the whole region once and slices it, so a frame costs one allocation for
// all of its strings instead of one each.
func setStrings(data []byte, sp *[nFields]span, m *Message) {
	out := [nFields]*string{&m.JoinRef, &m.Ref, &m.Topic, &m.Event}
	lo, hi, total := len(data), 0, 0
	simple := true
	for _, s := range sp {
		if s.null || s.start == s.end {
			continue
		}
		if s.escaped {
			simple = false
		}
		lo = min(lo, s.start)
		hi = max(hi, s.end)
		total += s.end - s.start
	}
	if total == 0 {
		return
	}
	// The slack bound keeps a V1 frame whose payload sits between the
	// fields from copying (and pinning) the whole payload.
	if simple && hi-lo <= total+64 {
		whole := string(data[lo:hi])
		for k, s := range sp {
			if !s.null && s.start != s.end {
				*out[k] = whole[s.start-lo : s.end-lo]
			}
		}
		return
	}
	for k, s := range sp {
		switch {
		case s.null || s.start == s.end:
		case s.escaped:
			*out[k] = unquote(data[s.start:s.end])
		default:
			*out[k] = string(data[s.start:s.end])
		}
	}
}
