// Package auth is authsvc: it signs and verifies user tokens for the other
// services over NATS request/reply, in a queue group so that any number of
// instances share the work.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/proto"
)

// Tokens is the token format. Callers over NATS never see it, so it can be
// swapped (another salt, another format) without touching them.
type Tokens interface {
	// SignUser returns a token carrying userID.
	SignUser(userID string) (string, error)
	// VerifyUser returns the user id a token carries and when it was
	// signed, or an error that errors.Is one of ErrExpired, ErrInvalid,
	// ErrMissing.
	VerifyUser(token string) (userID string, signedAt time.Time, err error)
}

// Verification errors of Tokens.VerifyUser.
var (
	ErrExpired = phxtoken.ErrExpired
	ErrInvalid = phxtoken.ErrInvalid
	ErrMissing = phxtoken.ErrMissing
)

// PhoenixTokens are Phoenix.Token tokens whose data is the user id: a
// binary when we sign it, a binary or an integer when a Phoenix app did
// (Phoenix.Token.sign(socket, "user socket", user.id)).
type PhoenixTokens struct{ Signer *phxtoken.Signer }

// SignUser implements Tokens. The id must pass proto.ValidUserID.
func (p PhoenixTokens) SignUser(userID string) (string, error) {
	if err := proto.ValidUserID(userID); err != nil {
		return "", err
	}
	return p.Signer.Sign(userID)
}

// VerifyUser implements Tokens. A token whose id fails proto.ValidUserID
// (a Phoenix app may sign anything) is ErrInvalid.
func (p PhoenixTokens) VerifyUser(token string) (string, time.Time, error) {
	data, signedAt, err := p.Signer.VerifySigned(token)
	if err != nil {
		return "", time.Time{}, err
	}
	id, err := phxtoken.UserID(data)
	if err == nil {
		err = proto.ValidUserID(id)
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return id, signedAt, nil
}

// Options configure a Service.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Tokens signs and verifies; required.
	Tokens Tokens
	// Bans, when set, are checked at every verification, and the service
	// answers proto.SubjectAuthBan and proto.SubjectAuthUnban. The
	// binaries always set it.
	Bans *Bans
	// StoreTimeout bounds each read and write of Bans; default 2s.
	StoreTimeout time.Duration
	// QueueGroup defaults to proto.QueueAuth.
	QueueGroup string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Wrap, if set, wraps every handler, e.g. to count and time requests
	// (svckit.Ops.Instrument).
	Wrap proto.Wrapper
}

// Service answers proto.SubjectAuthVerify and proto.SubjectAuthSign.
type Service struct {
	opts Options
	subs *proto.Subscriptions
}

// Start subscribes the service. Stop it with Drain.
func Start(opts Options) (*Service, error) {
	if opts.Conn == nil || opts.Tokens == nil {
		return nil, errors.New("auth: Options.Conn and Options.Tokens are required")
	}
	if opts.QueueGroup == "" {
		opts.QueueGroup = proto.QueueAuth
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StoreTimeout <= 0 {
		opts.StoreTimeout = 2 * time.Second
	}
	s := &Service{opts: opts}
	handlers := map[string]nats.MsgHandler{
		proto.SubjectAuthVerify: s.handleVerify,
		proto.SubjectAuthSign:   s.handleSign,
	}
	if opts.Bans != nil {
		handlers[proto.SubjectAuthBan] = s.handleBan
		handlers[proto.SubjectAuthUnban] = s.handleBan
	}
	var err error
	s.subs, err = proto.Serve(opts.Conn, opts.QueueGroup, handlers, opts.Wrap)
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return s, nil
}

// Drain stops taking requests and returns once the ones received are
// answered, or ctx ends.
func (s *Service) Drain(ctx context.Context) { s.subs.Drain(ctx) }

func (s *Service) handleVerify(m *nats.Msg) {
	var req proto.VerifyRequest
	var rep proto.VerifyReply
	if err := json.Unmarshal(m.Data, &req); err != nil {
		rep.Error = proto.TokenInvalid
	} else if user, signedAt, err := s.opts.Tokens.VerifyUser(req.Token); err != nil {
		switch {
		case errors.Is(err, ErrExpired):
			rep.Error = proto.TokenExpired
		case errors.Is(err, ErrMissing):
			rep.Error = proto.TokenMissing
		default:
			rep.Error = proto.TokenInvalid
		}
	} else if err := s.checkBan(user, signedAt); err != nil {
		rep.Error = proto.TokenRevoked
		if !errors.Is(err, ErrRevoked) {
			// Fail closed: a ban that cannot be read may be in force.
			s.opts.Logger.Error("ban lookup failed; token refused", "user", user, "err", err)
			rep.Error = proto.TokenUnavailable
		}
	} else {
		rep.UserID = user
	}
	s.respond(m, rep)
}

func (s *Service) checkBan(user string, signedAt time.Time) error {
	if s.opts.Bans == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	return s.opts.Bans.Check(ctx, user, signedAt)
}

// handleBan stores a ban or an unban, and on a ban closes the user's
// sockets on every gateway (proto.DisconnectSubject): when phoenix.js
// reconnects, its token is refused.
func (s *Service) handleBan(m *nats.Msg) {
	var req proto.BanRequest
	var rep proto.BanReply
	err := json.Unmarshal(m.Data, &req)
	if err == nil {
		err = proto.ValidUserID(req.UserID)
	}
	if err == nil && req.Seconds < 0 {
		err = errors.New("auth: negative ban duration")
	}
	if err != nil {
		rep.Error = "bad ban request: " + err.Error()
		s.respond(m, rep)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StoreTimeout)
	defer cancel()
	var rec banRecord
	ban := m.Subject == proto.SubjectAuthBan
	if ban {
		rec, err = s.opts.Bans.Ban(ctx, req.UserID, time.Duration(req.Seconds)*time.Second)
	} else {
		rec, err = s.opts.Bans.Unban(ctx, req.UserID)
	}
	if err == nil && ban {
		// The ban is stored first, so no socket this closes can come back.
		var subject string
		var data []byte
		if subject, data, err = proto.DisconnectMessage(req.UserID); err == nil {
			err = s.opts.Conn.Publish(subject, data)
		}
	}
	if err != nil {
		s.opts.Logger.Error("ban failed", "op", m.Subject, "user", req.UserID, "err", err)
		rep.Error = err.Error()
		s.respond(m, rep)
		return
	}
	rep.Forever = rec.Forever
	if !rec.Forever {
		rep.NotBefore = time.UnixMilli(rec.NotBefore).UTC().Format(time.RFC3339Nano)
	}
	s.opts.Logger.Info("ban", "op", m.Subject, "user", req.UserID, "forever", rec.Forever, "not_before", rep.NotBefore)
	s.respond(m, rep)
}

func (s *Service) handleSign(m *nats.Msg) {
	var req proto.SignRequest
	var rep proto.SignReply
	if err := json.Unmarshal(m.Data, &req); err != nil {
		rep.Error = "bad sign request: " + err.Error()
	} else if tok, err := s.opts.Tokens.SignUser(req.UserID); err != nil {
		rep.Error = err.Error()
	} else {
		rep.Token = tok
	}
	s.respond(m, rep)
}

func (s *Service) respond(m *nats.Msg, v any) { proto.Respond(m, v, s.opts.Logger) }
