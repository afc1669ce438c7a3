package supervisor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// checkMemory replaces, new first, every serving worker whose resident
// memory is above worker.max_memory, then schedules the next check.
func (s *supervisor) checkMemory() {
	if s.phase == phaseStopping {
		return
	}
	defer s.after(MemoryCheckInterval, timerEvent{kind: memoryCheck})
	g := s.current
	if g == nil || g.cfg.Worker.MaxMemory <= 0 {
		return
	}
	limit := int64(g.cfg.Worker.MaxMemory)
	for _, w := range g.slots {
		if w == nil || w.state != ready {
			continue
		}
		if rss := processRSS(w.pid); rss > limit {
			s.replaceFirst(w, fmt.Sprintf("uses %d MiB, above max_memory %d MiB", rss>>20, limit>>20), sigterm)
		}
	}
}

// processRSS returns a process's resident memory in bytes, 0 if unknown.
func processRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
