package presence

import (
	"slices"
	"strings"

	"github.com/phxnats/phxnats/proto"
)

// Diff returns what turns old into new, as Phoenix.Presence's
// presence_diff says it: for each user, the metas (by phx_ref) that are in
// new and not in old are joins, those in old and not in new are leaves. A
// meta whose phx_ref stays is unchanged (metas never change in place: an
// update is a new phx_ref with phx_ref_prev, so a leave and a join).
// Both maps of the result are non-nil.
func Diff(old, new proto.PresenceState) proto.PresenceDiff {
	d := proto.PresenceDiff{Joins: proto.PresenceState{}, Leaves: proto.PresenceState{}}
	for user, np := range new {
		if j := missing(np.Metas, old[user].Metas); len(j) > 0 {
			d.Joins[user] = proto.Presence{Metas: j}
		}
	}
	for user, op := range old {
		if l := missing(op.Metas, new[user].Metas); len(l) > 0 {
			d.Leaves[user] = proto.Presence{Metas: l}
		}
	}
	return d
}

// Empty reports whether d changes nothing.
func Empty(d proto.PresenceDiff) bool { return len(d.Joins) == 0 && len(d.Leaves) == 0 }

// missing returns the metas of a whose phx_ref is not in b.
func missing(a, b []proto.Meta) []proto.Meta {
	if len(b) == 0 {
		return a
	}
	var out []proto.Meta
	if len(b) <= 16 {
		for _, m := range a {
			if !slices.ContainsFunc(b, func(o proto.Meta) bool { return o.PhxRef == m.PhxRef }) {
				out = append(out, m)
			}
		}
		return out
	}
	refs := make(map[string]struct{}, len(b))
	for _, m := range b {
		refs[m.PhxRef] = struct{}{}
	}
	for _, m := range a {
		if _, ok := refs[m.PhxRef]; !ok {
			out = append(out, m)
		}
	}
	return out
}

// sortMetas orders metas by phx_ref, so that the same presences always
// encode to the same bytes.
func sortMetas(metas []proto.Meta) {
	slices.SortFunc(metas, func(a, b proto.Meta) int { return strings.Compare(a.PhxRef, b.PhxRef) })
}
