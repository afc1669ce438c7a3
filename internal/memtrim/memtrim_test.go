package memtrim

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFile reads this process's resident file pages, in kB.
func rssFile(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// Trim drops most of the test binary's image from the resident set, and
// the code it dropped still runs.
func TestTrim(t *testing.T) {
	before := rssFile(t)
	covered := Trim()
	after := rssFile(t)
	t.Logf("RssFile %d kB -> %d kB; %d kB of mappings covered", before, after, covered>>10)
	if covered == 0 {
		t.Fatal("Trim covered no mapping of the executable")
	}
	// The C library (a test binary links it) and what runs after Trim
	// stay resident.
	if after > before*3/4 {
		t.Errorf("RssFile %d kB -> %d kB: want at least a quarter dropped", before, after)
	}
	// Faulted back in: everything still works.
	if got := strings.Repeat("ab", 3) + strconv.Itoa(42); got != "ababab42" {
		t.Errorf("after Trim: %q", got)
	}
}

func TestSameDev(t *testing.T) {
	for _, tt := range []struct {
		maps, dev string
		want      bool
	}{{"fe:00", "fe:0", true}, {"08:01", "8:1", true}, {"08:02", "8:1", false}, {"x", "8:1", false}} {
		if got := sameDev(tt.maps, tt.dev); got != tt.want {
			t.Errorf("sameDev(%q, %q) = %v", tt.maps, tt.dev, got)
		}
	}
}
