package tunnel

import "encoding/hex"

func hexDecode(dst, src []byte) (int, error) { return hex.Decode(dst, src) }
