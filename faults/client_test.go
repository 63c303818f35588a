package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// client is a raw Phoenix V2 WebSocket client, as phoenix.js speaks it: it
// joins topics, pushes events and records every new_msg body it receives
// (with the time it arrived) and every error reply to its pushes.
type client struct {
	name string
	ws   *websocket.Conn

	wmu sync.Mutex // gorilla allows one writer at a time

	mu       sync.Mutex
	ref      int
	joinRefs map[string]string          // topic -> join_ref
	waiters  map[string]chan replyFrame // ref -> reply wanted
	got      map[string]time.Time       // new_msg body -> first arrival
	order    []string                   // new_msg bodies in arrival order
	dups     int                        // new_msg bodies received more than once
	pushErrs map[string]int             // error reason of push replies -> count
	pending  map[string]string          // ref of a new_msg push -> its body
	rejected map[string]string          // body of a new_msg push -> reason of its error reply
	closed   chan struct{}
	closeErr error
}

type replyFrame struct {
	Status   string          `json:"status"`
	Response json.RawMessage `json:"response"`
}

// dial connects to base (http://host:port) with an optional token. It
// returns errors instead of failing so that tests can poll with it.
func dial(t testing.TB, name, base, token string) (*client, error) {
	q := url.Values{"vsn": {"2.0.0"}}
	if token != "" {
		q.Set("token", token)
	}
	d := websocket.Dialer{HandshakeTimeout: 3 * time.Second}
	ws, res, err := d.Dial(strings.Replace(base, "http://", "ws://", 1)+"/socket/websocket?"+q.Encode(), nil)
	if err != nil {
		if res != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", base, err, res.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", base, err)
	}
	c := &client{
		name: name, ws: ws,
		joinRefs: map[string]string{}, waiters: map[string]chan replyFrame{},
		got: map[string]time.Time{}, pushErrs: map[string]int{}, closed: make(chan struct{}),
		pending: map[string]string{}, rejected: map[string]string{},
	}
	go c.read()
	t.Cleanup(c.close)
	return c, nil
}

func mustDial(t testing.TB, name, base, token string) *client {
	t.Helper()
	c, err := dial(t, name, base, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *client) close() { _ = c.ws.Close() }

func (c *client) read() {
	defer close(c.closed)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			c.mu.Unlock()
			return
		}
		var f []json.RawMessage
		if json.Unmarshal(data, &f) != nil || len(f) != 5 {
			continue
		}
		var ref, event string
		_ = json.Unmarshal(f[1], &ref)
		_ = json.Unmarshal(f[3], &event)
		now := time.Now()
		c.mu.Lock()
		switch event {
		case "phx_reply":
			var r replyFrame
			_ = json.Unmarshal(f[4], &r)
			if w, ok := c.waiters[ref]; ok {
				delete(c.waiters, ref)
				w <- r
			} else if r.Status == "error" {
				var reason struct{ Reason string }
				_ = json.Unmarshal(r.Response, &reason)
				c.pushErrs[reason.Reason]++
				if body, ok := c.pending[ref]; ok {
					c.rejected[body] = reason.Reason
				}
			}
			delete(c.pending, ref)
		case "new_msg":
			var p struct{ Body string }
			_ = json.Unmarshal(f[4], &p)
			if _, seen := c.got[p.Body]; seen {
				c.dups++
			} else {
				c.got[p.Body] = now
				c.order = append(c.order, p.Body)
			}
		}
		c.mu.Unlock()
	}
}

// send writes [join_ref, ref, topic, event, payload] and returns ref; a
// non-nil reply channel receives the reply to it.
func (c *client) send(topic, event string, payload any, reply chan replyFrame) (string, error) {
	body, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	c.ref++
	ref := strconv.Itoa(c.ref)
	joinRef := c.joinRefs[topic]
	if event == "phx_join" {
		joinRef = ref
		c.joinRefs[topic] = ref
	}
	if reply != nil {
		c.waiters[ref] = reply
	}
	if m, ok := payload.(map[string]string); ok && event == "new_msg" {
		c.pending[ref] = m["body"]
	}
	c.mu.Unlock()
	frame, _ := json.Marshal([]any{joinRef, ref, topic, event, json.RawMessage(body)})
	c.wmu.Lock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(3 * time.Second))
	err = c.ws.WriteMessage(websocket.TextMessage, frame)
	c.wmu.Unlock()
	return ref, err
}

// request sends and waits up to d for the reply.
func (c *client) request(topic, event string, payload any, d time.Duration) (replyFrame, error) {
	ch := make(chan replyFrame, 1)
	ref, err := c.send(topic, event, payload, ch)
	if err != nil {
		return replyFrame{}, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-c.closed:
		return replyFrame{}, fmt.Errorf("%s: socket closed waiting for the reply to %s: %v", c.name, event, c.closeErr)
	case <-time.After(d):
		c.mu.Lock()
		delete(c.waiters, ref)
		c.mu.Unlock()
		return replyFrame{}, fmt.Errorf("%s: no reply to %s on %s in %v", c.name, event, topic, d)
	}
}

// join joins topic; an error reply is an error with its response.
func (c *client) join(topic string, d time.Duration) error {
	r, err := c.request(topic, "phx_join", map[string]any{}, d)
	if err != nil {
		return err
	}
	if r.Status != "ok" {
		return fmt.Errorf("%s: join %s: %s %s", c.name, topic, r.Status, r.Response)
	}
	return nil
}

func (c *client) mustJoin(t testing.TB, topic string) {
	t.Helper()
	if err := c.join(topic, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// say pushes new_msg {body} (no reply unless it fails).
func (c *client) say(topic, body string) error {
	_, err := c.send(topic, "new_msg", map[string]string{"body": body}, nil)
	return err
}

// has reports when body arrived, if it did.
func (c *client) has(body string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.got[body]
	return at, ok
}

// arrivals returns the new_msg bodies in the order they arrived.
func (c *client) arrivals() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.order...)
}

func (c *client) stats() (received, dups int, pushErrs map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := map[string]int{}
	for k, v := range c.pushErrs {
		errs[k] = v
	}
	return len(c.got), c.dups, errs
}

// isClosed reports whether the socket ended, and why.
func (c *client) isClosed() (bool, error) {
	select {
	case <-c.closed:
		c.mu.Lock()
		defer c.mu.Unlock()
		return true, c.closeErr
	default:
		return false, nil
	}
}

// closeCode is the WebSocket close code the server sent, or 0.
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

// sent is one message a test sent: who sent it, its body and when.
type sent struct {
	from *client
	body string
	at   time.Time
}

// sender pushes new_msg on topic every interval until stop is called, with
// bodies "<prefix>-<n>".
type sender struct {
	mu   sync.Mutex
	msgs []sent
	stop chan struct{}
	done chan struct{}
}

func startSender(c *client, topic, prefix string, interval time.Duration) *sender {
	s := &sender{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 1; ; n++ {
			body := fmt.Sprintf("%s-%d", prefix, n)
			at := time.Now()
			if c.say(topic, body) == nil {
				s.mu.Lock()
				s.msgs = append(s.msgs, sent{from: c, body: body, at: at})
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sender) halt() []sent {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sent(nil), s.msgs...)
}

// delivery is the outcome of a set of sent messages at a set of receivers.
// Each message is acknowledged (its sender received its own broadcast
// back: roomsvc answers new_msg with no reply, so the echo is the only
// proof a phoenix.js client gets that the room took it), rejected (an
// error reply, e.g. "service timeout": the client knows it failed), or
// silent (neither, yet).
type delivery struct {
	sent, acked, rejected, silent int
	lost                          []string // acknowledged but missing at a receiver: must stay empty
	lostMsgs                      []lostMsg
	notAckedDelivered             int // rejected or silent, yet seen by some receiver
	reasons                       map[string]int
	maxDelay                      time.Duration // slowest acknowledged message, from send to its last receiver
}

// checkDelivery: every acknowledged message must be at every receiver.
func checkDelivery(msgs []sent, receivers []*client) delivery {
	d := delivery{reasons: map[string]int{}}
	for _, m := range msgs {
		d.sent++
		echo, ok := m.from.has(m.body)
		if !ok {
			m.from.mu.Lock()
			reason, rejected := m.from.rejected[m.body]
			m.from.mu.Unlock()
			if rejected {
				d.rejected++
				d.reasons[reason]++
			} else {
				d.silent++
			}
			for _, r := range receivers {
				if _, ok := r.has(m.body); ok {
					d.notAckedDelivered++
					break
				}
			}
			continue
		}
		d.acked++
		last := echo
		for _, r := range receivers {
			at, ok := r.has(m.body)
			if !ok {
				l := lostMsg{body: m.body, from: m.from.name, at: r.name, sent: m.at, echo: echo}
				d.lostMsgs = append(d.lostMsgs, l)
				d.lost = append(d.lost, l.String())
			} else if at.After(last) {
				last = at
			}
		}
		d.maxDelay = max(d.maxDelay, last.Sub(m.at))
	}
	return d
}

// lostMsg is an acknowledged message missing at a receiver.
type lostMsg struct {
	body, from, at string
	sent, echo     time.Time
}

func (l lostMsg) String() string {
	return fmt.Sprintf("%s (from %s, sent %s, echoed %s) missing at %s",
		l.body, l.from, l.sent.Format("15:04:05.000"), l.echo.Format("15:04:05.000"), l.at)
}

func (d delivery) String() string {
	return fmt.Sprintf("%d sent: %d acknowledged, %d rejected %v, %d silent (no echo, no error), %d not acknowledged yet delivered; %d acknowledged lost; slowest acknowledged %v",
		d.sent, d.acked, d.rejected, d.reasons, d.silent, d.notAckedDelivered, len(d.lost), d.maxDelay.Round(time.Millisecond))
}

// waitDelivered waits until every message of msgs is acknowledged or
// rejected and every acknowledged one is at every receiver, for at most d
// (longer than the gateways' request timeout, after which a push stuck on a
// lost request gets its error reply), then checks.
func waitDelivered(msgs []sent, receivers []*client, d time.Duration) delivery {
	var res delivery
	_, _ = poll(d, 20*time.Millisecond, func() error {
		res = checkDelivery(msgs, receivers)
		if len(res.lost) > 0 || res.silent > 0 {
			return errors.New("not yet")
		}
		return nil
	})
	return res
}
