package longpoll

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"

	"github.com/phxnats/phxnats/gateway/wire"
)

var (
	errBatch     = errors.New("more than 100 frames in one long-poll batch")
	errFrameSize = errors.New("frame over the size limit")
)

// decodeBody splits a POST body into frames and decodes them; on error it
// also returns the status to answer with.
func decodeBody(ser wire.Serializer, body []byte, ndjson bool, maxFrame int64) ([]wire.Message, int, error) {
	if !ndjson {
		m, err := ser.Decode(body, false)
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		return []wire.Message{m}, 0, nil
	}
	var msgs []wire.Message
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			continue
		}
		if len(msgs) == maxBatch {
			return nil, http.StatusBadRequest, errBatch
		}
		var m wire.Message
		var err error
		if line[0] == '[' || line[0] == '{' {
			if int64(len(line)) > maxFrame {
				return nil, http.StatusRequestEntityTooLarge, errFrameSize
			}
			m, err = ser.Decode(line, false)
		} else {
			// phoenix.js sends binary frames as standard base64.
			if int64(base64.StdEncoding.DecodedLen(len(line))) > maxFrame+2 {
				return nil, http.StatusRequestEntityTooLarge, errFrameSize
			}
			data := make([]byte, base64.StdEncoding.DecodedLen(len(line)))
			n, derr := base64.StdEncoding.Decode(data, line)
			if derr != nil {
				return nil, http.StatusBadRequest, errors.Join(wire.ErrMalformed, derr)
			}
			if int64(n) > maxFrame {
				return nil, http.StatusRequestEntityTooLarge, errFrameSize
			}
			m, err = ser.Decode(data[:n], true)
		}
		if err != nil {
			return nil, http.StatusBadRequest, err
		}
		msgs = append(msgs, m)
	}
	if len(msgs) == 0 {
		return nil, http.StatusBadRequest, errors.Join(wire.ErrMalformed, errors.New("empty long-poll batch"))
	}
	return msgs, 0, nil
}

// newToken returns an unguessable session token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return sessionPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// writeStatus answers {"status":N}, in an HTTP 200 as Phoenix does.
func writeStatus(w http.ResponseWriter, status int) {
	writeBody(w, strconv.AppendInt([]byte(`{"status":`), int64(status), 10), '}')
}

// writeMessages answers {"messages":[...],"status":N,"token":T}, with each
// message the text of one frame as a JSON string, keys in Phoenix's order.
func writeMessages(w http.ResponseWriter, status int, token string, msgs [][]byte) {
	size := 64 + len(token)
	for _, m := range msgs {
		size += len(m) + len(m)/8 + 3
	}
	b := make([]byte, 0, size)
	b = append(b, `{"messages":[`...)
	for i, m := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendJSONString(b, string(m))
	}
	b = append(b, `],"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"token":`...)
	b = wire.AppendJSONString(b, token)
	writeBody(w, b, '}')
}

func writeBody(w http.ResponseWriter, body []byte, last byte) {
	body = append(body, last)
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
