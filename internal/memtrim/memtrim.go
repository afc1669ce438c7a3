// Package memtrim keeps baton's resident memory to what it uses.
//
// Most of a Go program's resident set is its own executable: the kernel
// maps file pages in 64 KiB runs around each page touched (fault-around),
// so package initialisation, a start or a burst of reloads leave most of
// baton's 9 MB image mapped though its idle loop runs a sliver of it.
// Trim drops the executable's read-only mappings from the resident set;
// the pages stay in the page cache and what runs again faults back in.
package memtrim

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// GCPercent is the garbage collector's target for a supervisor, unless
// GOGC says otherwise: baton's live heap is about a megabyte, and Go's
// default lets it grow to four between collections.
const GCPercent = 25

// Setup tunes the runtime for a long-running supervisor: no memory
// profiling, whose bucket table would grow with every distinct allocation
// site sampled. Call it first thing in main.
func Setup() {
	runtime.MemProfileRate = 0
}

// Release returns to the kernel what a burst of work left resident: the
// heap the collector frees (a collection first: it reads the image's
// tables), then the executable's pages (Trim). From its first call on the
// heap target is GCPercent, unless GOGC says otherwise: a start (a
// self-upgraded baton's included) runs at Go's default, faster. It
// returns the bytes of the image it covered.
func Release() int64 {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
	debug.FreeOSMemory()
	return Trim()
}

// Trim drops the resident pages of the executable's read-only mappings
// (code and read-only data) and returns the bytes it covered. Those
// mappings are never written and the file cannot change while it runs
// (ETXTBSY), so a page faulted back in is the same page.
func Trim() int64 {
	fi, err := os.Stat("/proc/self/exe")
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	return trimFile(st)
}

// trimFile drops the resident pages of this process's read-only mappings
// of the file st describes and returns the bytes it covered.
func trimFile(st *syscall.Stat_t) int64 {
	dev := strconv.FormatUint(uint64(unix.Major(st.Dev)), 16) + ":" + strconv.FormatUint(uint64(unix.Minor(st.Dev)), 16)
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var covered int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 6 || string(fields[1]) != "r-xp" && string(fields[1]) != "r--p" {
			continue
		}
		if ino, err := strconv.ParseUint(string(fields[4]), 10, 64); err != nil || ino != st.Ino || !sameDev(string(fields[3]), dev) {
			continue
		}
		lo, hi, ok := span(string(fields[0]))
		if ok && madvise(lo, hi-lo, unix.MADV_DONTNEED) == nil {
			covered += int64(hi - lo)
		}
	}
	return covered
}

// sameDev compares a maps device ("fe:00") with "major:minor" in hex
// without leading zeros.
func sameDev(maps, dev string) bool {
	major, minor, ok := strings.Cut(maps, ":")
	if !ok {
		return false
	}
	a, err1 := strconv.ParseUint(major, 16, 32)
	b, err2 := strconv.ParseUint(minor, 16, 32)
	return err1 == nil && err2 == nil && strconv.FormatUint(a, 16)+":"+strconv.FormatUint(b, 16) == dev
}

// span parses "start-end" (hex).
func span(s string) (lo, hi uintptr, ok bool) {
	start, end, ok := strings.Cut(s, "-")
	if !ok {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(start, 16, 64)
	b, err2 := strconv.ParseUint(end, 16, 64)
	if err1 != nil || err2 != nil || b <= a {
		return 0, 0, false
	}
	return uintptr(a), uintptr(b), true
}

// madvise advises on memory that is not Go's (the executable's own
// mappings), which unix.Madvise's []byte cannot name.
func madvise(addr, length uintptr, advice int) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice)); e != 0 {
		return e
	}
	return nil
}
