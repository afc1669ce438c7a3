package deal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Capacity is the most sockets a Dealer holds, and deals to.
const Capacity = 4096

// Fds are a Dealer's descriptors, to pass to another process: the
// program and its maps.
type Fds struct{ Prog, State, Turns, Socks int }

// Dealer is a loaded program and its maps. Only one process may deal at
// a time; another may Adopt the descriptors once it takes over.
type Dealer struct {
	fds Fds
	n   int // entries of turns in force
}

// helpers of the program (include/uapi/linux/bpf.h, enum bpf_func_id)
const (
	fnMapLookupElem     = 1
	fnSkSelectReuseport = 82
)

// New creates the maps and loads the program.
func New() (*Dealer, error) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		return nil, errors.New("deal: needs a 64-bit build")
	}
	d := &Dealer{fds: Fds{-1, -1, -1, -1}}
	var err error
	if d.fds.State, err = createMap(unix.BPF_MAP_TYPE_ARRAY, 4, 8, 1); err == nil {
		if d.fds.Turns, err = createMap(unix.BPF_MAP_TYPE_ARRAY, 4, 4, Capacity); err == nil {
			if d.fds.Socks, err = createMap(unix.BPF_MAP_TYPE_REUSEPORT_SOCKARRAY, 4, 8, Capacity); err == nil {
				d.fds.Prog, err = loadProgram(program(d.fds.State, d.fds.Turns, d.fds.Socks))
			}
		}
	}
	if err != nil {
		d.Close()
		return nil, fmt.Errorf("deal: %w", err)
	}
	return d, nil
}

// Adopt takes over the descriptors of a Dealer another process made,
// which stops dealing: what it dealt stays in force until Deal.
func Adopt(fds Fds) (*Dealer, error) {
	d := &Dealer{fds: fds}
	var v [8]byte
	if err := d.lookup(fds.State, 0, v[:]); err != nil {
		return nil, fmt.Errorf("deal: adopt: %w", err)
	}
	d.n = int(binary.NativeEndian.Uint32(v[4:]))
	return d, nil
}

// Fds returns the descriptors, which stay the Dealer's.
func (d *Dealer) Fds() Fds { return d.fds }

// Close closes the descriptors. A program attached to a group stays in
// force until another replaces it, or the group's sockets close.
func (d *Dealer) Close() {
	for _, fd := range []int{d.fds.Prog, d.fds.State, d.fds.Turns, d.fds.Socks} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	d.fds = Fds{-1, -1, -1, -1}
}

// Add puts the listening SO_REUSEPORT socket fd in the program's socks,
// at the first key free, and returns that key. A socket already in a map
// (of a program that was attached to its group before) is refused with
// EBUSY until that map is freed.
func (d *Dealer) Add(fd int) (uint32, error) {
	var v [8]byte
	binary.NativeEndian.PutUint64(v[:], uint64(fd))
	for key := uint32(0); key < Capacity; key++ {
		err := d.update(d.fds.Socks, key, v[:], unix.BPF_NOEXIST)
		if err == nil {
			return key, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return 0, fmt.Errorf("deal: add socket: %w", err)
		}
	}
	return 0, fmt.Errorf("deal: add socket: all %d keys are taken", Capacity)
}

// Attach attaches the program to the SO_REUSEPORT group of fd, in place
// of any program attached before.
func (d *Dealer) Attach(fd int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, d.fds.Prog)
	return os.NewSyscallError("setsockopt SO_ATTACH_REUSEPORT_EBPF", err)
}

// Deal makes the program deal new connections to the sockets at keys, in
// turn. An empty keys leaves the choice to the kernel's hash. Each step
// keeps every entry in force a key that was dealt to before or is dealt
// to now: growing writes the entries, then n; shrinking writes n first.
func (d *Dealer) Deal(keys []uint32) error {
	if len(keys) > Capacity {
		return fmt.Errorf("deal: %d sockets to deal to, more than %d", len(keys), Capacity)
	}
	setN := func() error {
		var v [8]byte
		binary.NativeEndian.PutUint32(v[4:], uint32(len(keys)))
		return d.update(d.fds.State, 0, v[:], unix.BPF_ANY)
	}
	if len(keys) < d.n {
		if err := setN(); err != nil {
			return fmt.Errorf("deal: %w", err)
		}
		d.n = len(keys)
	}
	for i, key := range keys {
		var v [4]byte
		binary.NativeEndian.PutUint32(v[:], key)
		if err := d.update(d.fds.Turns, uint32(i), v[:], unix.BPF_ANY); err != nil {
			return fmt.Errorf("deal: %w", err)
		}
	}
	if len(keys) >= d.n {
		if err := setN(); err != nil {
			return fmt.Errorf("deal: %w", err)
		}
		d.n = len(keys)
	}
	return nil
}

// bpf(2)'s attributes for the commands used (include/uapi/linux/bpf.h,
// union bpf_attr); pointers are unsafe.Pointer so that what they point to
// is kept and never moved while the call runs.
type mapCreateAttr struct {
	mapType, keySize, valueSize, maxEntries, mapFlags uint32
}

type mapElemAttr struct {
	mapFd uint32
	_     uint32
	key   unsafe.Pointer
	value unsafe.Pointer
	flags uint64
}

type progLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              unsafe.Pointer
	license            unsafe.Pointer
	logLevel           uint32
	logSize            uint32
	logBuf             unsafe.Pointer
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
}

func bpf(cmd int, attr unsafe.Pointer, size uintptr) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_BPF, uintptr(cmd), uintptr(attr), size)
	if errno != 0 {
		return -1, errno
	}
	return int(r), nil
}

func createMap(typ, keySize, valueSize, entries uint32) (int, error) {
	attr := mapCreateAttr{mapType: typ, keySize: keySize, valueSize: valueSize, maxEntries: entries}
	fd, err := bpf(unix.BPF_MAP_CREATE, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err != nil {
		return -1, os.NewSyscallError("bpf BPF_MAP_CREATE", err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

func (d *Dealer) update(mapFd int, key uint32, value []byte, flags uint64) error {
	attr := mapElemAttr{mapFd: uint32(mapFd), key: unsafe.Pointer(&key), value: unsafe.Pointer(&value[0]), flags: flags}
	_, err := bpf(unix.BPF_MAP_UPDATE_ELEM, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return os.NewSyscallError("bpf BPF_MAP_UPDATE_ELEM", err)
}

func (d *Dealer) lookup(mapFd int, key uint32, value []byte) error {
	attr := mapElemAttr{mapFd: uint32(mapFd), key: unsafe.Pointer(&key), value: unsafe.Pointer(&value[0])}
	_, err := bpf(unix.BPF_MAP_LOOKUP_ELEM, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	return os.NewSyscallError("bpf BPF_MAP_LOOKUP_ELEM", err)
}

func loadProgram(insns []insn) (int, error) {
	license := []byte("GPL\x00") // bpf_sk_select_reuseport is GPL-only
	attr := progLoadAttr{
		progType:           unix.BPF_PROG_TYPE_SK_REUSEPORT,
		insnCnt:            uint32(len(insns)),
		insns:              unsafe.Pointer(&insns[0]),
		license:            unsafe.Pointer(&license[0]),
		expectedAttachType: unix.BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
	}
	copy(attr.progName[:], "baton_deal")
	fd, err := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr))
	if err == unix.EINVAL || err == unix.EACCES {
		// Refused by the verifier: load again for its reasons.
		log := make([]byte, 64<<10)
		attr.logLevel, attr.logSize, attr.logBuf = 1, uint32(len(log)), unsafe.Pointer(&log[0])
		if _, again := bpf(unix.BPF_PROG_LOAD, unsafe.Pointer(&attr), unsafe.Sizeof(attr)); again != nil {
			if msg := strings.TrimSpace(string(log[:cLen(log)])); msg != "" {
				return -1, fmt.Errorf("%w; the verifier says: %s", os.NewSyscallError("bpf BPF_PROG_LOAD", err), lastLine(msg))
			}
		}
	}
	if err != nil {
		return -1, os.NewSyscallError("bpf BPF_PROG_LOAD", err)
	}
	unix.CloseOnExec(fd)
	return fd, nil
}

// lastLine is the verifier's reason, the last line of its log but for
// its count of what it processed.
func lastLine(log string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "processed ") {
			return l
		}
	}
	return log
}

// cLen is the length of the C string in b.
func cLen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
