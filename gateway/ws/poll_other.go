//go:build !linux

package ws

import "syscall"

// pollingAvailable: every socket has a reader goroutine here.
const pollingAvailable = false

// pollState is empty: no socket is polled here.
type pollState struct{}

// pollers are none: without epoll every socket has a reader goroutine.
type pollers struct{}

func (*pollers) close() {}

// newPollState returns nil: every socket gets a reader goroutine.
func (s *Server) newPollState(syscall.RawConn) *pollState { return nil }

// startPolling reports false: every socket gets a reader goroutine.
func (c *conn) startPolling() bool { return false }

// shutdownFD is never called: closeConn calls it for polled sockets only.
func shutdownFD(uintptr) {}
