package row

// Unexported layout constants, for the external tests of package row_test.
const (
	CodecVersionV1 = codecVersionV1
	DecoderBlock   = decoderBlock
)
