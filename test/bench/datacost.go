package bench

import (
	"context"
)

// DataCost is not written yet.
func DataCost(ctx context.Context, bins Bins, s RTSPScale) []Figure { return nil }
