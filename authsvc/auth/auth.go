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

	"github.com/nats-io/nats.go"

	"github.com/phxnats/phxnats/authsvc/phxtoken"
	"github.com/phxnats/phxnats/proto"
)

// Tokens is the token format. Callers over NATS never see it, so it can be
// swapped (another salt, another format) without touching them.
type Tokens interface {
	// SignUser returns a token carrying userID.
	SignUser(userID string) (string, error)
	// VerifyUser returns the user id a token carries, or an error that
	// errors.Is one of ErrExpired, ErrInvalid, ErrMissing.
	VerifyUser(token string) (string, error)
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

// SignUser implements Tokens.
func (p PhoenixTokens) SignUser(userID string) (string, error) {
	if userID == "" {
		return "", errors.New("auth: empty user id")
	}
	return p.Signer.Sign(userID)
}

// VerifyUser implements Tokens.
func (p PhoenixTokens) VerifyUser(token string) (string, error) {
	data, err := p.Signer.Verify(token)
	if err != nil {
		return "", err
	}
	id, err := phxtoken.UserID(data)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return id, nil
}

// Options configure a Service.
type Options struct {
	// Conn is the NATS connection; required.
	Conn *nats.Conn
	// Tokens signs and verifies; required.
	Tokens Tokens
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
	s := &Service{opts: opts}
	var err error
	s.subs, err = proto.Serve(opts.Conn, opts.QueueGroup, map[string]nats.MsgHandler{
		proto.SubjectAuthVerify: s.handleVerify,
		proto.SubjectAuthSign:   s.handleSign,
	}, opts.Wrap)
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
	} else if user, err := s.opts.Tokens.VerifyUser(req.Token); err != nil {
		switch {
		case errors.Is(err, ErrExpired):
			rep.Error = proto.TokenExpired
		case errors.Is(err, ErrMissing):
			rep.Error = proto.TokenMissing
		default:
			rep.Error = proto.TokenInvalid
		}
	} else {
		rep.UserID = user
	}
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
