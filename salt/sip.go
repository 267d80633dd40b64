package salt

import (
	"encoding/binary"
	"math/bits"
	"unsafe"
)

// sipState is a streaming SipHash-2-4 that lives on the caller's stack, so
// hashing several fields needs neither a concatenation buffer nor a heap
// allocation (github.com/dchest/siphash hashes one slice, or allocates a
// hash.Hash64). Tests check it against dchest/siphash bit for bit.
type sipState struct {
	v0, v1, v2, v3 uint64
	buf            [8]byte
	nbuf           int
	total          uint64
}

func (h *sipState) init(k0, k1 uint64) {
	h.v0 = k0 ^ 0x736f6d6570736575
	h.v1 = k1 ^ 0x646f72616e646f6d
	h.v2 = k0 ^ 0x6c7967656e657261
	h.v3 = k1 ^ 0x7465646279746573
	h.nbuf = 0
	h.total = 0
}

// sipRound is one SipRound; it is small enough to be inlined.
func sipRound(v0, v1, v2, v3 uint64) (uint64, uint64, uint64, uint64) {
	v0 += v1
	v1 = bits.RotateLeft64(v1, 13)
	v1 ^= v0
	v0 = bits.RotateLeft64(v0, 32)
	v2 += v3
	v3 = bits.RotateLeft64(v3, 16)
	v3 ^= v2
	v0 += v3
	v3 = bits.RotateLeft64(v3, 21)
	v3 ^= v0
	v2 += v1
	v1 = bits.RotateLeft64(v1, 17)
	v1 ^= v2
	v2 = bits.RotateLeft64(v2, 32)
	return v0, v1, v2, v3
}

// blocks compresses whole 8-byte blocks of p (len(p) a multiple of 8),
// keeping the state in registers.
func (h *sipState) blocks(p []byte) {
	v0, v1, v2, v3 := h.v0, h.v1, h.v2, h.v3
	for ; len(p) >= 8; p = p[8:] {
		m := binary.LittleEndian.Uint64(p)
		v3 ^= m
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
		v0 ^= m
	}
	h.v0, h.v1, h.v2, h.v3 = v0, v1, v2, v3
}

// write feeds p into h.
func (h *sipState) write(p []byte) {
	h.total += uint64(len(p))
	if h.nbuf > 0 {
		n := copy(h.buf[h.nbuf:], p)
		h.nbuf += n
		p = p[n:]
		if h.nbuf < 8 {
			return
		}
		h.blocks(h.buf[:])
		h.nbuf = 0
	}
	whole := len(p) &^ 7
	h.blocks(p[:whole])
	h.nbuf = copy(h.buf[:], p[whole:])
}

// writeString feeds s into h without copying it: the bytes are only read.
func (h *sipState) writeString(s string) {
	h.write(unsafe.Slice(unsafe.StringData(s), len(s)))
}

// sum finishes the hash. h must not be written to afterwards.
func (h *sipState) sum() uint64 {
	var m uint64
	for i := h.nbuf - 1; i >= 0; i-- {
		m = m<<8 | uint64(h.buf[i])
	}
	m |= h.total << 56
	v0, v1, v2, v3 := h.v0, h.v1, h.v2, h.v3^m
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0 ^= m
	v2 ^= 0xff
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	v0, v1, v2, v3 = sipRound(v0, v1, v2, v3)
	return v0 ^ v1 ^ v2 ^ v3
}
