package salt

import (
	"encoding/binary"
	"math/bits"
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

func (h *sipState) round() {
	h.v0 += h.v1
	h.v1 = bits.RotateLeft64(h.v1, 13)
	h.v1 ^= h.v0
	h.v0 = bits.RotateLeft64(h.v0, 32)
	h.v2 += h.v3
	h.v3 = bits.RotateLeft64(h.v3, 16)
	h.v3 ^= h.v2
	h.v0 += h.v3
	h.v3 = bits.RotateLeft64(h.v3, 21)
	h.v3 ^= h.v0
	h.v2 += h.v1
	h.v1 = bits.RotateLeft64(h.v1, 17)
	h.v1 ^= h.v2
	h.v2 = bits.RotateLeft64(h.v2, 32)
}

func (h *sipState) block(m uint64) {
	h.v3 ^= m
	h.round()
	h.round()
	h.v0 ^= m
}

// sipWrite feeds p (a string or a byte slice, without converting one into
// the other) into h.
func sipWrite[T ~string | ~[]byte](h *sipState, p T) {
	h.total += uint64(len(p))
	i := 0
	if h.nbuf > 0 {
		for i < len(p) && h.nbuf < 8 {
			h.buf[h.nbuf] = p[i]
			h.nbuf++
			i++
		}
		if h.nbuf < 8 {
			return
		}
		h.block(binary.LittleEndian.Uint64(h.buf[:]))
		h.nbuf = 0
	}
	for ; i+8 <= len(p); i += 8 {
		m := uint64(p[i]) | uint64(p[i+1])<<8 | uint64(p[i+2])<<16 | uint64(p[i+3])<<24 |
			uint64(p[i+4])<<32 | uint64(p[i+5])<<40 | uint64(p[i+6])<<48 | uint64(p[i+7])<<56
		h.block(m)
	}
	for ; i < len(p); i++ {
		h.buf[h.nbuf] = p[i]
		h.nbuf++
	}
}

// sum finishes the hash. h must not be written to afterwards.
func (h *sipState) sum() uint64 {
	var m uint64
	for i := h.nbuf - 1; i >= 0; i-- {
		m = m<<8 | uint64(h.buf[i])
	}
	m |= h.total << 56
	h.block(m)
	h.v2 ^= 0xff
	h.round()
	h.round()
	h.round()
	h.round()
	return h.v0 ^ h.v1 ^ h.v2 ^ h.v3
}
