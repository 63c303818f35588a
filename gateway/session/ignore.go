package session

import "github.com/phxnats/phxnats/proto"

// SetIgnored replaces the users whose broadcasts the socket skips.
func (s *Session) SetIgnored(users []string) {
	if users == nil {
		users = []string{} // the whole list, empty: not a diff
	}
	s.UpdateIgnored(&proto.IgnoreUpdate{Ignored: users})
}

// UpdateIgnored applies an ignore list update, the whole list (at join) or
// a diff (proto.IgnoresSubject), to the users whose broadcasts the socket
// skips. The set is replaced, never changed in place, since the fan-out
// reads it without a lock; concurrent updates retry rather than lose one.
func (s *Session) UpdateIgnored(u *proto.IgnoreUpdate) {
	for {
		old := s.ignored.Load()
		var cur map[string]struct{}
		if old != nil {
			cur = *old
		}
		next := u.Apply(cur)
		if s.ignored.CompareAndSwap(old, &next) {
			return
		}
	}
}

// Skips reports whether a broadcast from user must not reach this socket:
// with excludeFrom, a broadcast not meant for the user's own sockets; with
// ignore (the channel joined with proto.JoinIgnore), one from a user this
// socket's user ignores.
func (s *Session) Skips(from string, excludeFrom, ignore bool) bool {
	if from == "" {
		return false
	}
	if excludeFrom && from == s.userID {
		return true
	}
	if !ignore {
		return false
	}
	if set := s.ignored.Load(); set != nil {
		_, ok := (*set)[from]
		return ok
	}
	return false
}
