package memtrim

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mappings lists this process's read-only mappings of the file at path
// (as Trim matches them: r-xp or r--p), with their resident kB in all.
func mappings(t *testing.T, path string) (spans [][2]uint64, residentKB int) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	mine := false
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 5 && !strings.HasSuffix(fields[0], ":") {
			// A mapping's header: start-end perms offset dev inode [path].
			mine = len(fields) >= 6 && (fields[1] == "r-xp" || fields[1] == "r--p") && fields[5] == path
			if mine {
				lo, hi, ok := span(fields[0])
				if !ok {
					t.Fatalf("smaps header %q", line)
				}
				spans = append(spans, [2]uint64{uint64(lo), uint64(hi)})
			}
			continue
		}
		if v, ok := strings.CutPrefix(line, "Rss:"); ok && mine {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("smaps line %q", line)
			}
			residentKB += n
		}
	}
	return spans, residentKB
}

func size(spans [][2]uint64) (n int64) {
	for _, s := range spans {
		n += int64(s[1] - s[0])
	}
	return n
}

// trimStat is what trimFile matches the file at path by.
func trimStat(t *testing.T, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

// A read-only mapping nothing else touches: wholly resident before,
// nothing resident after, and its contents read back the same.
func TestTrimFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "image")
	want := bytes.Repeat([]byte("baton\n"), 1<<18) // 1.5 MB
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if !bytes.Equal(mem, want) { // touches every page
		t.Fatal("mapping differs from the file")
	}
	spans, before := mappings(t, path)
	if len(spans) != 1 || before < len(want)>>10 {
		t.Fatalf("mapping %v, %d kB resident: want one, all %d kB resident", spans, before, len(want)>>10)
	}
	covered := trimFile(trimStat(t, path))
	_, after := mappings(t, path)
	t.Logf("resident %d kB -> %d kB; %d kB covered", before, after, covered>>10)
	if covered != size(spans) {
		t.Errorf("covered %d bytes, want the mapping's %d", covered, size(spans))
	}
	if after != 0 {
		t.Errorf("%d kB still resident after trimming, want 0", after)
	}
	if !bytes.Equal(mem, want) {
		t.Error("after trimming, the mapping differs from the file")
	}
}

// faultIn makes every page of the spans resident in this process: reading
// them through /proc/self/mem maps them as a touch would.
func faultIn(t *testing.T, spans [][2]uint64) {
	t.Helper()
	f, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<16)
	for _, s := range spans {
		for off := s[0]; off < s[1]; off += uint64(len(buf)) {
			n := min(uint64(len(buf)), s[1]-off)
			if _, err := f.ReadAt(buf[:n], int64(off)); err != nil {
				t.Fatalf("reading %#x: %v", off, err)
			}
		}
	}
}

// Trim finds the running executable's read-only mappings and drops them,
// and the code it dropped still runs. The image is made wholly resident
// first, so the outcome does not depend on what the test binary touched
// before. What runs between Trim and the second reading (reading smaps,
// this test) faults back in, 64 KiB around each page touched: about
// 60 % of a test binary's small image (1716 of 2804 kB measured), so the
// bound only tells a Trim that dropped pages from one that did not;
// TestTrimFile is the exact one.
func TestTrim(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no collector faulting pages in meanwhile
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	spans, _ := mappings(t, exe)
	if len(spans) == 0 {
		t.Fatal("no read-only mapping of the executable in /proc/self/smaps")
	}
	faultIn(t, spans)
	_, before := mappings(t, exe)
	covered := Trim()
	_, after := mappings(t, exe)
	t.Logf("executable resident %d kB -> %d kB; %d kB of mappings covered", before, after, covered>>10)
	if covered != size(spans) {
		t.Errorf("Trim covered %d bytes, want the %d bytes of the executable's read-only mappings", covered, size(spans))
	}
	if int64(before) < size(spans)>>10*9/10 {
		t.Fatalf("only %d of %d kB resident after faulting the image in", before, size(spans)>>10)
	}
	if after > before*9/10 {
		t.Errorf("executable resident %d kB -> %d kB: want at least a tenth dropped", before, after)
	}
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
