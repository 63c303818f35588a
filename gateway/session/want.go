package session

import (
	"slices"

	"github.com/phxnats/phxnats/proto"
)

// Want is what one channel's join asked to receive beyond the channels
// guide's frames (proto.JoinFlags of its phx_join payload). A channel that
// asked for nothing has a nil *Want, and the fan-out sends it the guide's
// frames without looking further.
type Want struct {
	// Sender: payloads of broadcasts with a From get it as "user_id".
	Sender bool
	// Ignore: broadcasts From users the socket's user ignores are skipped.
	Ignore bool
	// Flags are all the join parameters asked for with true, matched
	// against proto.Broadcast.OptIn.
	Flags []string
	// History: the join asked for history (proto.JoinHistory); its live
	// broadcasts carry their position as the frame's ref.
	History bool
}

// wantOf returns what the phx_join payload asks for, nil when nothing, and
// its history request (nil: none).
func wantOf(payload []byte) (*Want, *proto.HistoryRequest) {
	w := WantOf(proto.JoinFlags(payload))
	hist, _ := proto.HistoryOf(payload) // the service refused a bad one
	if hist != nil {
		if w == nil {
			w = &Want{}
		}
		w.History = true
	}
	return w, hist
}

// WantOf returns what a join with the given flags (proto.JoinFlags) asks
// for, nil when nothing.
func WantOf(flags []string) *Want {
	if len(flags) == 0 {
		return nil
	}
	return &Want{
		Sender: slices.Contains(flags, proto.JoinSender),
		Ignore: slices.Contains(flags, proto.JoinIgnore),
		Flags:  flags,
	}
}

// Accepts reports whether a channel with want receives broadcasts whose
// OptIn is optIn ("" for broadcasts meant for every channel).
func (w *Want) Accepts(optIn string) bool {
	return optIn == "" || w != nil && slices.Contains(w.Flags, optIn)
}
