package session

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/proto"
)

// request asks a service and always returns a Reply: failures of NATS or of
// the service become error replies, so the client never waits forever.
func (s *Session) request(kind, subject string, req any) proto.Reply {
	data, err := json.Marshal(req)
	if err != nil {
		return proto.Error("bad request")
	}
	start := time.Now()
	// The service drops the request once its deadline has passed (the
	// client was told "service timeout" by then), so a push that failed
	// here is never broadcast later.
	out := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	proto.SetDeadline(out, start.Add(s.cfg.RequestTimeout))
	msg, err := s.cfg.Conn.RequestMsg(out, s.cfg.RequestTimeout)
	outcome := "ok"
	var rep proto.Reply
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		outcome, rep = "no_responders", proto.Error(ReasonUnavailable)
	case errors.Is(err, nats.ErrTimeout):
		outcome, rep = "timeout", proto.Error(ReasonTimeout)
	case err != nil:
		outcome, rep = "error", proto.Error(ReasonUnavailable)
	default:
		if err := json.Unmarshal(msg.Data, &rep); err != nil || rep.Validate() != nil {
			outcome, rep = "bad_reply", proto.Error(ReasonBadReply)
		}
	}
	s.cfg.Metrics.RequestSeconds.WithLabelValues(kind, outcome).Observe(time.Since(start).Seconds())
	if outcome != "ok" {
		s.cfg.Logger.Warn("service request failed", "subject", subject, "outcome", outcome, "err", err)
	}
	return rep
}

func (s *Session) reply(joinRef, ref, topic string, rep proto.Reply) {
	resp, binary := []byte(rep.Response), false
	switch {
	case rep.Binary != nil:
		resp, binary = rep.Binary, true
	case len(resp) == 0:
		resp = emptyObject
	}
	data, bin, err := s.ser.AppendReply(nil, joinRef, ref, topic, rep.Status, resp, binary)
	if r := refused(err); binary && r != nil {
		// The client cannot carry bytes (binary.go).
		data, bin, err = s.ser.AppendReply(nil, joinRef, ref, topic, proto.StatusError, proto.Reason(r.reason), false)
	}
	if err != nil {
		s.cfg.Logger.Error("encode reply", "topic", topic, "err", err)
		return
	}
	s.send(data, bin)
}

func (s *Session) control(joinRef, topic string, enc func([]byte, string, string) ([]byte, bool, error)) {
	data, bin, err := enc(nil, joinRef, topic)
	if err != nil {
		s.cfg.Logger.Error("encode control frame", "topic", topic, "err", err)
		return
	}
	s.send(data, bin)
}

func (s *Session) send(data []byte, bin bool) {
	s.cfg.Metrics.FramesOut.Inc()
	s.tr.Deliver(Frame{Data: data, Binary: bin})
}

var emptyObject = []byte("{}")
