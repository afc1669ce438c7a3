package deal

import "golang.org/x/sys/unix"

// insn is one eBPF instruction (struct bpf_insn): dst in the low nibble
// of regs, src in the high one.
type insn struct {
	code uint8
	regs uint8
	off  int16
	imm  int32
}

func op(code uint8, dst, src uint8, off int16, imm int32) insn {
	return insn{code: code, regs: src<<4 | dst, off: off, imm: imm}
}

// Registers: r0 returns, r1-r5 are a call's arguments (clobbered by it),
// r6-r9 are kept across calls, r10 is the frame pointer.
const (
	r0, r1, r2, r3, r4, r6, r7, r10 = 0, 1, 2, 3, 4, 6, 7, 10
)

const skPass = 1 // SK_PASS

func mov(dst, src uint8) insn { return op(unix.BPF_ALU64|unix.BPF_MOV|unix.BPF_X, dst, src, 0, 0) }
func movImm(dst uint8, imm int32) insn {
	return op(unix.BPF_ALU64|unix.BPF_MOV|unix.BPF_K, dst, 0, 0, imm)
}
func addImm(dst uint8, imm int32) insn {
	return op(unix.BPF_ALU64|unix.BPF_ADD|unix.BPF_K, dst, 0, 0, imm)
}
func call(fn int32) insn { return op(unix.BPF_JMP|unix.BPF_CALL, 0, 0, 0, fn) }

// jeq0 jumps over skip instructions when dst is 0.
func jeq0(dst uint8, skip int16) insn {
	return op(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, dst, 0, skip, 0)
}

// load32 is dst = *(u32 *)(src + off); store32 is *(u32 *)(dst + off) = src.
func load32(dst, src uint8, off int16) insn {
	return op(unix.BPF_LDX|unix.BPF_MEM|unix.BPF_W, dst, src, off, 0)
}
func store32(dst, src uint8, off int16) insn {
	return op(unix.BPF_STX|unix.BPF_MEM|unix.BPF_W, dst, src, off, 0)
}

// loadMap is dst = the map whose descriptor is fd: two instructions.
func loadMap(dst uint8, fd int) []insn {
	return []insn{op(unix.BPF_LD|unix.BPF_DW|unix.BPF_IMM, dst, unix.BPF_PSEUDO_MAP_FD, 0, int32(fd)), {}}
}

// program returns the dealer (see the package's doc):
//
//	ctx = r1
//	key = 0; st = lookup(state, &key);   if !st: pass
//	n = st.n;                             if n == 0: pass
//	i = atomic_fetch_add(&st.next, 1) % n
//	t = lookup(turns, &i);                if !t: pass
//	key = *t; sk_select_reuseport(ctx, socks, &key, 0)
//	pass: return SK_PASS
func program(state, turns, socks int) []insn {
	var p []insn
	emit := func(is ...insn) { p = append(p, is...) }
	var jumps []int // instructions that jump to pass
	toPass := func(reg uint8) { jumps = append(jumps, len(p)); emit(jeq0(reg, 0)) }
	// lookup leaves in r0 the value at the u32 key stored at r10+slot.
	lookup := func(fd int, slot int16) {
		emit(loadMap(r1, fd)...)
		emit(mov(r2, r10), addImm(r2, int32(slot)), call(fnMapLookupElem))
	}

	emit(mov(r6, r1))
	emit(op(unix.BPF_ST|unix.BPF_MEM|unix.BPF_W, r10, 0, -4, 0)) // key = 0
	lookup(state, -4)
	toPass(r0)
	emit(load32(r7, r0, 4)) // n
	toPass(r7)
	emit(movImm(r1, 1))
	emit(op(unix.BPF_STX|unix.BPF_ATOMIC|unix.BPF_W, r0, r1, 0, unix.BPF_ADD|unix.BPF_FETCH)) // r1 = next++
	emit(op(unix.BPF_ALU|unix.BPF_MOD|unix.BPF_X, r1, r7, 0, 0))                              // w1 %= n
	emit(store32(r10, r1, -8))
	lookup(turns, -8)
	toPass(r0)
	emit(load32(r1, r0, 0), store32(r10, r1, -12))
	emit(mov(r1, r6))
	emit(loadMap(r2, socks)...)
	emit(mov(r3, r10), addImm(r3, -12), movImm(r4, 0), call(fnSkSelectReuseport))
	pass := len(p)
	emit(movImm(r0, skPass), op(unix.BPF_JMP|unix.BPF_EXIT, 0, 0, 0, 0))
	for _, j := range jumps {
		p[j].off = int16(pass - j - 1)
	}
	return p
}
