package redisbus

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// trimLoop trims one topic's log every TrimInterval while there is reason to:
// entries were added or acknowledged since the last run, or the topic is full
// and waits for acknowledgements made elsewhere.
func (b *Bus) trimLoop(t *topic) {
	defer b.wg.Done()
	tick := time.NewTicker(b.cfg.TrimInterval)
	defer tick.Stop()

	failing := false
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
		if !t.dirty.Swap(false) && !t.full.Load() {
			continue
		}
		if err := b.trim(b.ctx, t); err != nil {
			t.dirty.Store(true) // try again next tick
			if b.ctx.Err() == nil && !failing {
				b.log.Warn("trimming log failed; retrying", "broker", t.name, "err", err)
			}
			failing = true
			continue
		}
		if failing {
			b.log.Info("trimming log works again", "broker", t.name)
			failing = false
		}
	}
}

// trim removes the entries of t's log that no group needs any more and
// updates t.full.
//
// trimScript trims KEYS[1] by ARGV[2] ("minid" or "maxlen") to ARGV[3] if its
// groups are still exactly the sorted, newline-separated names in ARGV[1], and
// returns the stream's length, or -1 when the groups changed. Removing whole
// macro nodes first is cheap; the exact pass then handles the partial node,
// which matters when MaxLen is small. An empty bound trims nothing.
var trimScript = redis.NewScript(`
local names = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  for i = 1, #g, 2 do
    if g[i] == 'name' then names[#names + 1] = g[i + 1] end
  end
end
table.sort(names)
if table.concat(names, '\n') ~= ARGV[1] then return -1 end
if ARGV[3] ~= '' then
  if ARGV[2] == 'maxlen' then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[3], 'LIMIT', 0)
  else
    redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[3], 'LIMIT', 0)
    redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
  end
end
return redis.call('XLEN', KEYS[1])
`)

// The oldest entry a group needs is its oldest pending entry, or the one
// after its last-delivered entry. Both only move forward, so reading them one
// group at a time, without a transaction, never gives a bound that is too
// high; a group created meanwhile by Subscribe starts at the end of the log,
// after every entry this run may trim, and one recreated from the start makes
// the trim script skip the pass.
func (b *Bus) trim(ctx context.Context, t *topic) error {
	groups, err := b.client.XInfoGroups(ctx, t.logKey).Result()
	if err != nil {
		if isNoSuchKey(err) {
			b.setFull(t, false, 0)
			return nil
		}
		return fmt.Errorf("xinfo groups: %w", err)
	}

	// The trim runs only if the groups are still those read above: a group
	// recreated from the start of the log (after Redis lost its data) in
	// between needs entries this pass would otherwise remove.
	names := make([]string, len(groups))
	for i, g := range groups {
		names[i] = g.Name
	}
	slices.Sort(names)
	mode, bound := "maxlen", strconv.FormatInt(b.cfg.MaxLen, 10)
	if len(groups) > 0 {
		// Nobody reads these entries otherwise; with no group, keep the
		// newest MaxLen for a group recreated from the start.
		minID, err := b.oldestNeeded(ctx, t, groups)
		if err != nil {
			return err
		}
		mode, bound = "minid", minID
	}
	n, err := trimScript.Run(ctx, b.client, []string{t.logKey}, strings.Join(names, "\n"), mode, bound).Int64()
	if err != nil {
		return fmt.Errorf("xtrim: %w", err)
	}
	if n < 0 {
		return nil // the groups changed: the next pass trims
	}
	b.setFull(t, len(groups) > 0 && n >= b.cfg.MaxLen, n)
	return nil
}

// oldestNeeded returns the id below which every group has acknowledged every
// entry, or "" when all the groups have gone meanwhile.
func (b *Bus) oldestNeeded(ctx context.Context, t *topic, groups []redis.XInfoGroup) (string, error) {
	pipe := b.client.Pipeline()
	pending := make([]*redis.XPendingCmd, len(groups))
	for i, g := range groups {
		if g.Pending > 0 {
			pending[i] = pipe.XPending(ctx, t.logKey, g.Name)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx)
	}

	oldest, found := streamID{}, false
	for i, g := range groups {
		need, err := parseID(g.LastDeliveredID)
		if err != nil {
			return "", fmt.Errorf("group %q: last-delivered-id: %w", g.Name, err)
		}
		need = need.next()
		if pending[i] != nil {
			p, err := pending[i].Result()
			switch {
			case isNoGroup(err):
				continue // deleted since XINFO: it needs nothing
			case err != nil:
				return "", fmt.Errorf("xpending %q: %w", g.Name, err)
			case p.Count > 0:
				lower, err := parseID(p.Lower)
				if err != nil {
					return "", fmt.Errorf("group %q: oldest pending id: %w", g.Name, err)
				}
				need = lower
			}
		}
		if !found || need.less(oldest) {
			oldest, found = need, true
		}
	}
	if !found {
		return "", nil
	}
	return oldest.String(), nil
}

// setFull records whether the topic refuses publishes, logging changes.
func (b *Bus) setFull(t *topic, full bool, length int64) {
	if t.full.Swap(full) == full {
		return
	}
	if full {
		b.log.Warn("log is at its retention limit; refusing publishes until groups acknowledge",
			"broker", t.name, "length", length, "max_len", b.cfg.MaxLen)
	} else {
		b.log.Info("log is below its retention limit again", "broker", t.name, "length", length)
	}
}

// streamID is a parsed Redis stream entry id, "<ms>-<seq>".
type streamID struct{ ms, seq uint64 }

func parseID(s string) (streamID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok {
		return streamID{}, fmt.Errorf("malformed stream id %q", s)
	}
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("malformed stream id %q", s)
	}
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if err != nil {
		return streamID{}, fmt.Errorf("malformed stream id %q", s)
	}
	return streamID{ms, seq}, nil
}

func (id streamID) less(o streamID) bool {
	return id.ms < o.ms || (id.ms == o.ms && id.seq < o.seq)
}

// next returns the smallest id greater than id.
func (id streamID) next() streamID {
	if id.seq == math.MaxUint64 {
		return streamID{id.ms + 1, 0}
	}
	return streamID{id.ms, id.seq + 1}
}

func (id streamID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}
