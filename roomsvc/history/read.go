package history

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/phxnats/phxnats/proto"
)

// Channel is what one join receives live, so that its history holds the
// same broadcasts: those a live channel would skip are no loss.
type Channel struct {
	// User is the socket's user, "" when anonymous.
	User string
	// Flags are the join parameters asked for with true (proto.JoinFlags).
	Flags []string
	// Ignored are the users whose broadcasts the channel skips, when it
	// joined with proto.JoinIgnore.
	Ignored map[string]struct{}
}

// keeps reports whether the channel receives b live.
func (c *Channel) keeps(b *proto.Broadcast) bool {
	if b.OptIn != "" && !contains(c.Flags, b.OptIn) {
		return false
	}
	if b.From != "" && b.ExcludeFrom && b.From == c.User {
		return false
	}
	if _, ignored := c.Ignored[b.From]; ignored && b.From != "" {
		return false
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// MaxReplyBytes bounds a history reply; the oldest messages past it are
// left out (recovered false). A join reply is one frame, which must fit
// a socket's send queue (gateway.send_queue_bytes, 4 MiB by default) and
// NATS's max_payload.
const MaxReplyBytes = 512 << 10

// fetchers bounds the direct gets one read runs at once.
const fetchers = 16

// Read answers a join of topic that asked for req: the room's messages up
// to pos (the gateway's position when the socket entered the room: later
// ones reach it live), as c would have received them, and the position
// live broadcasts continue after. It waits, within ctx, for the index to
// reach pos.
func (x *Index) Read(ctx context.Context, topic string, req proto.HistoryRequest, pos uint64, c Channel, maxLast int) (rep proto.HistoryReply, resume uint64, err error) {
	subject, err := proto.RoomSubject(topic)
	if err != nil {
		return proto.HistoryReply{}, 0, err
	}
	if err := x.wait(ctx, pos); err != nil {
		return proto.HistoryReply{}, 0, err
	}
	v := x.look(subject, pos)
	resume = pos
	rep = proto.HistoryReply{Messages: []proto.HistoryMessage{}, Recovered: true}
	sender := contains(c.Flags, proto.JoinSender)
	if req.HasSince && req.Since > pos && !x.exists(ctx, req.Since) {
		// A position the room stream has not reached: not one of ours
		// (made up, or from a stream since recreated, whose sequences
		// started again). Resuming after it would skip every broadcast
		// up to it; the client gets what the room keeps instead, and is
		// told it may have missed some.
		req.Since = 0
		defer func() { rep.Recovered = false }()
	}
	if req.HasSince {
		resume = max(pos, req.Since)
		// Every message after since is known to the index unless the
		// stream may have dropped some of them before it saw them, or
		// the room's own bound dropped some.
		rep.Recovered = req.Since >= v.lostUpTo && req.Since >= v.dropped
		i := len(v.seqs)
		for i > 0 && v.seqs[i-1] > req.Since {
			i--
		}
		got, complete, _, err := x.fetch(ctx, subject, v.seqs[i:], &c, sender, -1)
		if err != nil {
			return proto.HistoryReply{}, 0, err
		}
		rep.Messages = append(rep.Messages, got...)
		rep.Recovered = rep.Recovered && complete
	} else {
		n := min(req.Last, maxLast)
		// Broadcasts this channel would not receive do not count: read
		// further back, a batch at a time, until n are found.
		end := len(v.seqs)
		var batches [][]proto.HistoryMessage
		found := 0
		for end > 0 && found < n {
			start := max(0, end-(n-found))
			got, complete, gone, err := x.fetch(ctx, subject, v.seqs[start:end], &c, sender, n-found)
			if err != nil {
				return proto.HistoryReply{}, 0, err
			}
			rep.Recovered = rep.Recovered && complete
			batches = append(batches, got)
			found += len(got)
			end = start
			if gone {
				break // the older ones are gone too
			}
		}
		for i := len(batches) - 1; i >= 0; i-- {
			rep.Messages = append(rep.Messages, batches[i]...)
		}
		if over := len(rep.Messages) - n; over > 0 {
			rep.Messages = rep.Messages[over:]
		}
	}
	if ctx.Err() != nil {
		return proto.HistoryReply{}, 0, errBehind
	}
	// The reply must fit in a NATS message and a socket's send queue:
	// past MaxReplyBytes the oldest messages are left out, and said.
	limit := min(MaxReplyBytes, int(x.nc.MaxPayload())-64<<10)
	size := 0
	for i := len(rep.Messages) - 1; i >= 0; i-- {
		m := rep.Messages[i]
		size += len(m.Payload) + len(m.Event) + len(m.Seq) + 40
		if size > limit {
			rep.Messages, rep.Recovered = rep.Messages[i+1:], false
			break
		}
	}
	rep.Seq = proto.FormatPosition(resume)
	return rep, resume, nil
}

// fetch reads the messages at seqs (oldest first) and returns those c
// keeps, in order, at most limit of the newest (-1: all). complete is
// false when one was missing from the stream or was binary (history
// replays JSON only).
//
// gone reports that a message was missing: nothing older is left.
func (x *Index) fetch(ctx context.Context, subject string, seqs []uint64, c *Channel, sender bool, limit int) (_ []proto.HistoryMessage, complete, gone bool, _ error) {
	type result struct {
		msg     proto.HistoryMessage
		kept    bool
		missing bool
		binary  bool
		err     error
	}
	results := make([]result, len(seqs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(fetchers, len(seqs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				data, err := x.get(ctx, subject, seqs[i])
				if errors.Is(err, errGone) {
					results[i].missing = true
					continue
				}
				if err != nil {
					results[i].err = err
					continue
				}
				b, err := proto.DecodeBroadcast(data)
				switch {
				case err != nil:
					// Not a broadcast: no channel received it live either.
				case !c.keeps(&b):
				case b.Binary != nil:
					results[i].binary = true
				default:
					payload := b.Payload
					if sender && b.From != "" {
						payload = withSender(payload, b.From)
					}
					results[i] = result{kept: true, msg: proto.HistoryMessage{Seq: proto.FormatPosition(seqs[i]), Event: b.Event, Payload: payload}}
				}
			}
		}()
	}
	for i := range seqs {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			return nil, false, false, r.err
		}
	}
	// Retention drops a room's oldest first, and it goes on while the
	// gets run in parallel: a message found missing means the older ones
	// are gone too (or about to be). Keep only what follows the newest
	// missing one, so that the history is always a suffix of the room.
	complete, from := true, 0
	for i, r := range results {
		if r.missing {
			complete, gone, from = false, true, i+1
			x.missing(subject, seqs[i])
		}
	}
	var out []proto.HistoryMessage
	for _, r := range results[from:] {
		switch {
		case r.binary:
			complete = false
		case r.kept:
			out = append(out, r.msg)
		}
	}
	if limit >= 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, complete, gone, nil
}

// exists reports whether the room stream has reached seq (another
// gateway, ahead of this one's position, may have handed it out).
func (x *Index) exists(ctx context.Context, seq uint64) bool {
	st, err := x.js.Stream(ctx, proto.RoomStream)
	return err == nil && st.CachedInfo().State.LastSeq >= seq
}

// get reads the message at seq with a direct get, which any replica
// answers. It returns errGone when the stream no longer has it (or has
// another room's there: the index and the stream disagree, which counts
// the same).
func (x *Index) get(ctx context.Context, subject string, seq uint64) ([]byte, error) {
	req := []byte(`{"seq":` + strconv.FormatUint(seq, 10) + `}`)
	m, err := x.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET."+proto.HistoryStream, req)
	switch {
	case err != nil:
		return nil, err
	case m.Header.Get("Status") == "404":
		return nil, errGone
	case m.Header.Get("Status") != "":
		return nil, fmt.Errorf("history: direct get of %d: %s %s", seq, m.Header.Get("Status"), m.Header.Get("Description"))
	case m.Header.Get(jsSubject) != subject:
		return nil, errGone
	}
	return m.Data, nil
}

// errGone: the stream no longer has the message.
var errGone = errors.New("history: message gone")

const jsSubject = "Nats-Subject"

// withSender returns the JSON object payload with "user_id": from added
// last, as the gateway adds it live (fanout.appendSender), unless it has
// a "user_id" already.
func withSender(payload json.RawMessage, from string) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(payload, &obj) != nil {
		return payload
	}
	if _, ok := obj["user_id"]; ok {
		return payload
	}
	p := bytes.TrimRight(payload, " \t\r\n")
	p = bytes.TrimRight(p[:len(p)-1], " \t\r\n")
	out := append([]byte(nil), p...)
	if out[len(out)-1] != '{' {
		out = append(out, ',')
	}
	id, _ := json.Marshal(from)
	out = append(append(append(out, `"user_id":`...), id...), '}')
	return out
}
