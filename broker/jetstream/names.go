package jetstream

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// maxToken bounds the length of one escaped name, so that stream names stay
// well under JetStream's 255 bytes (they are also directory names) and
// subjects stay short.
const maxToken = 160

// token maps a topic, group or consumer name to a string that is safe as a
// JetStream stream or consumer name and as one subject token, and that is
// different for every name.
//
// Lower-case letters, digits and '-' are kept; every other byte, '_'
// included, becomes '_' and two lower-case hex digits: "default/orders"
// becomes "default_2forders" and "trigger.orders" becomes "trigger_2eorders".
// Upper-case letters are escaped too, so that names differing only in case
// stay apart on case-insensitive file systems. A name whose escaped form
// would be longer than maxToken becomes "H" and the hex SHA-256 of the name;
// escaped forms never contain 'H', so the two forms cannot collide.
func token(name string) string {
	var b strings.Builder
	b.Grow(len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		if isPlain(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('_')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	if b.Len() > maxToken {
		sum := sha256.Sum256([]byte(name))
		return "H" + hex.EncodeToString(sum[:])
	}
	return b.String()
}

const hexDigits = "0123456789abcdef"

func isPlain(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
}

// Names of the JetStream objects of one topic. Every topic has three
// streams, created when first needed:
//
//	signalbox_log_<topic>     the log; subject signalbox.log.<topic>
//	signalbox_state_<topic>   per-group records, the latest per subject:
//	                            signalbox.state.<topic>.attempts.<group>.<seq>
//	                            signalbox.state.<topic>.held.<group>.<consumer>
//	signalbox_dlq_<topic>     dead letters; subject signalbox.dlq.<topic>.<group>
//	signalbox_kv_<topic>      StateStore entries (see state.go):
//	                            signalbox.kv.<topic>.<namespace>.k<key>
//
// and one durable pull consumer on the log per group, named token(group).
type names struct {
	logStream, logSubject     string
	stateStream, statePrefix  string
	deadStream, deadPrefix    string
	kvStream, kvPrefix        string
	nextPrefix, ackPrefixBase string
}

func topicNames(topic string) names {
	tok := token(topic)
	n := names{
		logStream:   "signalbox_log_" + tok,
		logSubject:  "signalbox.log." + tok,
		stateStream: "signalbox_state_" + tok,
		statePrefix: "signalbox.state." + tok + ".",
		deadStream:  "signalbox_dlq_" + tok,
		deadPrefix:  "signalbox.dlq." + tok + ".",
		kvStream:    "signalbox_kv_" + tok,
		kvPrefix:    "signalbox.kv." + tok + ".",
	}
	n.nextPrefix = "$JS.API.CONSUMER.MSG.NEXT." + n.logStream + "."
	n.ackPrefixBase = "$JS.ACK." + n.logStream + "."
	return n
}

func (n names) attemptsSubject(groupTok string, seq uint64) string {
	return n.statePrefix + "attempts." + groupTok + "." + strconv.FormatUint(seq, 10)
}

func (n names) heldSubject(groupTok, consumerTok string) string {
	return n.statePrefix + "held." + groupTok + "." + consumerTok
}

// groupStateFilter matches every record of one group: its attempts and the
// held messages of each of its consumers.
func (n names) groupStateFilter(groupTok string) string {
	return n.statePrefix + "*." + groupTok + ".*"
}

func (n names) deadSubject(groupTok string) string { return n.deadPrefix + groupTok }

// ackSubject builds the subject that acknowledges (or naks, or renews) stream
// sequence seq in the group's consumer, in the server's first ack-subject
// format, which servers keep accepting next to the newer one. The server
// identifies the message by seq alone for ack and progress; a nak also
// checks that dseq, the consumer sequence of the delivery, is still
// outstanding. The count, timestamp and pending tokens are informational.
func (n names) ackSubject(groupTok string, seq, dseq uint64) string {
	return n.ackPrefixBase + groupTok + ".1." + strconv.FormatUint(seq, 10) + "." +
		strconv.FormatUint(dseq, 10) + ".0.0"
}

// delivery is what the reply subject of a delivered message tells about it.
type delivery struct {
	streamSeq   uint64 // the message's position in the log: its ID
	consumerSeq uint64 // this delivery's sequence within the consumer
	count       uint64 // how often the message was delivered, this time included
}

// parseDelivery reads a JetStream ack reply subject, in either the first
// format ($JS.ACK.<stream>.<consumer>.<count>.<sseq>.<dseq>.<ts>.<pending>,
// nine tokens) or the newer one, which adds a domain and an account hash
// after ACK and may carry more tokens at the end.
func parseDelivery(reply string) (delivery, bool) {
	tokens := strings.Split(reply, ".")
	if len(tokens) < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
		return delivery{}, false
	}
	offset := 2
	switch {
	case len(tokens) == 9:
	case len(tokens) >= 11:
		offset = 4
	default:
		return delivery{}, false
	}
	count, err1 := strconv.ParseUint(tokens[offset+2], 10, 64)
	sseq, err2 := strconv.ParseUint(tokens[offset+3], 10, 64)
	dseq, err3 := strconv.ParseUint(tokens[offset+4], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || sseq == 0 {
		return delivery{}, false
	}
	return delivery{streamSeq: sseq, consumerSeq: dseq, count: count}, true
}
