//go:build !unix

package ws

import (
	"errors"
	"net"
	"syscall"
)

// rawConn returns nil: the write pool's non-blocking writes are written for
// unix sockets, so elsewhere every socket is written by a goroutine of its
// own (the path a slow client takes on unix).
func rawConn(net.Conn) syscall.RawConn { return nil }

func (w *poolWorker) writeFD(uintptr) bool {
	w.err = errors.ErrUnsupported
	return true
}
