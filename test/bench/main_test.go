package bench

import (
	"os"
	"testing"

	"github.com/porthole-dev/porthole/test/framework"
)

func TestMain(m *testing.M) {
	code := m.Run()
	framework.Default.Remove()
	os.Exit(code)
}
