package row

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

// codecVersion is the first byte of every encoded event. A new layout gets a
// new version, and DecodeEvent keeps reading the old ones, so a spool
// written by an older collector replays after an upgrade. Version 2 added
// the engagement fields and the tracker version; version 1 records decode
// with them zero.
const (
	codecVersion   = 2
	codecVersionV1 = 1
)

// maxCodecProps bounds the property count DecodeEvent accepts, far above
// what the event endpoint lets through, so garbage cannot make it allocate
// large slices.
const maxCodecProps = 1024

// ErrCorruptEvent is wrapped by DecodeEvent for a record that is not a valid
// encoded event.
var ErrCorruptEvent = errors.New("corrupt event record")

// AppendBinary appends the compact binary encoding of e to dst and returns
// the extended slice. It allocates only when dst lacks capacity, so a caller
// that reuses its buffer encodes without allocating. The encoding holds
// exactly the fields of Event (no IP, no raw user agent) and is read back by
// DecodeEvent.
//
// Layout: version byte; TS as a zig-zag varint of Unix milliseconds;
// VisitorID as 8 bytes little endian; RetentionDays as a uvarint; a flags
// byte (bit 0 Interactive); RevenueAmount as 8 bytes of IEEE 754 bits;
// ScrollDepth as one byte, EngagementTime and TrackerVersion as uvarints; the
// string fields in declaration order, each as a uvarint length and bytes;
// the property count as a uvarint and then key and value strings in turn.
func (e *Event) AppendBinary(dst []byte) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendVarint(dst, e.TS.UnixMilli())
	dst = binary.LittleEndian.AppendUint64(dst, e.VisitorID)
	dst = binary.AppendUvarint(dst, uint64(e.RetentionDays))
	var flags byte
	if e.Interactive {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(e.RevenueAmount))
	dst = append(dst, e.ScrollDepth)
	dst = binary.AppendUvarint(dst, uint64(e.EngagementTime))
	dst = binary.AppendUvarint(dst, uint64(e.TrackerVersion))
	for _, s := range [...]string{
		e.WorkspaceID, e.Domain, e.Name, e.Hostname, e.Pathname,
		e.Referrer, e.ReferrerSource, e.UTMSource, e.UTMMedium, e.UTMCampaign,
		e.UTMContent, e.UTMTerm, e.ClickIDParam, e.CountryCode, e.Region, e.City,
		e.Browser, e.BrowserVersion, e.OS, e.OSVersion, e.Device, e.RevenueCurrency,
	} {
		dst = appendString(dst, s)
	}
	n := min(len(e.PropKeys), len(e.PropValues))
	dst = binary.AppendUvarint(dst, uint64(n))
	for i := range n {
		dst = appendString(dst, e.PropKeys[i])
		dst = appendString(dst, e.PropValues[i])
	}
	return dst
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// eventDecoder walks one record. All strings are cut from one string holding
// the record's bytes (a copy of its own for DecodeEvent, a slice of a shared
// block for Decoder), so a decoded Event owns its memory and the caller may
// reuse rec.
type eventDecoder struct {
	rec []byte
	s   string // the bytes of rec, not aliasing it
	off int
	err error
}

func (d *eventDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d", ErrCorruptEvent, what, d.off)
	}
}

func (d *eventDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.rec[d.off:])
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.off += n
	return v
}

func (d *eventDecoder) fixed64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if len(d.rec)-d.off < 8 {
		d.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.rec[d.off:])
	d.off += 8
	return v
}

func (d *eventDecoder) str(what string) string {
	n := d.uvarint(what)
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.rec)-d.off) {
		d.fail(what)
		return ""
	}
	s := d.s[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

// DecodeEvent decodes a record made by AppendBinary into e, replacing every
// field; e's property slices are reused when they have capacity. The decoded
// strings do not alias rec. A record that is truncated, has trailing bytes,
// an unknown version or out-of-range values is rejected with an error
// wrapping ErrCorruptEvent, and e is then left in an unspecified state.
func DecodeEvent(rec []byte, e *Event) error {
	return decodeEvent(rec, string(rec), e)
}

// Decoder decodes records like DecodeEvent but copies them into shared
// blocks of decoderBlock bytes instead of allocating one string per
// record: the shipper's decode then allocates once per few hundred events.
// A block is never written again where it was handed out, so the strings
// stay valid for as long as they are referenced (a batch until its insert),
// and the block is freed by the garbage collector after the last one. The
// zero value is ready; a Decoder is not safe for concurrent use.
type Decoder struct {
	block []byte
}

// decoderBlock is the size of a Decoder block: about 250 events of 250
// bytes; a larger record gets a block of its own size.
const decoderBlock = 64 << 10

// Decode is DecodeEvent with e's strings held in d's blocks.
func (d *Decoder) Decode(rec []byte, e *Event) error {
	if cap(d.block)-len(d.block) < len(rec) {
		d.block = make([]byte, 0, max(decoderBlock, len(rec)))
	}
	start := len(d.block)
	d.block = append(d.block, rec...)
	if len(rec) == 0 {
		return decodeEvent(rec, "", e)
	}
	return decodeEvent(rec, unsafe.String(&d.block[start], len(rec)), e)
}

// decodeEvent decodes rec into e; s holds the same bytes as rec, and e's
// strings are cut from it.
func decodeEvent(rec []byte, s string, e *Event) error {
	if len(rec) == 0 {
		return fmt.Errorf("%w: empty record", ErrCorruptEvent)
	}
	if rec[0] != codecVersion && rec[0] != codecVersionV1 {
		return fmt.Errorf("%w: unknown version %d", ErrCorruptEvent, rec[0])
	}
	d := eventDecoder{rec: rec, s: s, off: 1}
	var ms int64
	if d.err == nil {
		v, n := binary.Varint(rec[d.off:])
		if n <= 0 {
			d.fail("timestamp")
		} else {
			ms = v
			d.off += n
		}
	}
	// Years 0..9999 are the range ClickHouse DateTime64(3) can hold with room
	// to spare; anything beyond is garbage.
	const minMS, maxMS = -62135596800000, 253402300799999
	if d.err == nil && (ms < minMS || ms > maxMS) {
		d.fail("timestamp")
	}
	visitor := d.fixed64("visitor id")
	days := d.uvarint("retention days")
	if d.err == nil && days > math.MaxUint16 {
		d.fail("retention days")
	}
	var flags byte
	if d.err == nil {
		if d.off >= len(rec) {
			d.fail("flags")
		} else {
			flags = rec[d.off]
			d.off++
			if flags&^1 != 0 {
				d.fail("flags")
			}
		}
	}
	revenue := math.Float64frombits(d.fixed64("revenue"))
	if d.err == nil && (math.IsNaN(revenue) || math.IsInf(revenue, 0)) {
		d.fail("revenue")
	}
	var depth byte
	var engaged, version uint64
	if rec[0] >= 2 {
		if d.err == nil {
			if d.off >= len(rec) {
				d.fail("scroll depth")
			} else {
				depth = rec[d.off]
				d.off++
				if depth > 100 && depth != NoScrollDepth {
					d.fail("scroll depth")
				}
			}
		}
		engaged = d.uvarint("engagement time")
		if d.err == nil && engaged > math.MaxUint32 {
			d.fail("engagement time")
		}
		version = d.uvarint("tracker version")
		if d.err == nil && version > math.MaxUint16 {
			d.fail("tracker version")
		}
	}
	if d.err != nil {
		return d.err
	}
	e.TS = time.UnixMilli(ms).UTC()
	e.VisitorID = visitor
	e.RetentionDays = uint16(days)
	e.Interactive = flags&1 != 0
	e.RevenueAmount = revenue
	e.ScrollDepth, e.EngagementTime, e.TrackerVersion = depth, uint32(engaged), uint16(version)
	for _, p := range [...]*string{
		&e.WorkspaceID, &e.Domain, &e.Name, &e.Hostname, &e.Pathname,
		&e.Referrer, &e.ReferrerSource, &e.UTMSource, &e.UTMMedium, &e.UTMCampaign,
		&e.UTMContent, &e.UTMTerm, &e.ClickIDParam, &e.CountryCode, &e.Region, &e.City,
		&e.Browser, &e.BrowserVersion, &e.OS, &e.OSVersion, &e.Device, &e.RevenueCurrency,
	} {
		*p = d.str("string field")
	}
	n := d.uvarint("property count")
	// Each property needs at least two length bytes.
	if d.err == nil && (n > maxCodecProps || n*2 > uint64(len(rec)-d.off)) {
		d.fail("property count")
	}
	if d.err != nil {
		return d.err
	}
	e.PropKeys, e.PropValues = e.PropKeys[:0], e.PropValues[:0]
	for range n {
		k := d.str("property key")
		v := d.str("property value")
		e.PropKeys = append(e.PropKeys, k)
		e.PropValues = append(e.PropValues, v)
	}
	if d.err != nil {
		return d.err
	}
	if d.off != len(rec) {
		return fmt.Errorf("%w: %d trailing bytes", ErrCorruptEvent, len(rec)-d.off)
	}
	if n == 0 {
		e.PropKeys, e.PropValues = nil, nil
	}
	return nil
}
