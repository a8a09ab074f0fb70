/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Syscall tracepoint helpers. Syscalls are reported at exit, with their
 * result, so failed attempts count; the arguments come from the saved user
 * registers (exit_take). The few calls whose state before the call matters
 * (old credentials) still pair an entry that stashes under (tid, family)
 * with the exit that takes it back.
 */
#ifndef MAMORI_SYSCALL_H
#define MAMORI_SYSCALL_H

#include "mamori.h"

/* Stash families: one per syscall, unique across all objects. */
enum {
	SC_OPENAT = 1, SC_OPEN, SC_CREAT, SC_OPENAT2,
	SC_RENAME, SC_RENAMEAT, SC_RENAMEAT2,
	SC_LINK, SC_LINKAT, SC_SYMLINK, SC_SYMLINKAT,
	SC_UNLINK, SC_UNLINKAT, SC_RMDIR,
	SC_CHMOD, SC_FCHMOD, SC_FCHMODAT, SC_FCHMODAT2,
	SC_CHOWN, SC_LCHOWN, SC_FCHOWN, SC_FCHOWNAT,
	SC_SOCKET, SC_CONNECT, SC_BIND, SC_LISTEN, SC_ACCEPT, SC_ACCEPT4,
	SC_DUP2, SC_DUP3,
	SC_MOUNT, SC_UMOUNT2, SC_INIT_MODULE, SC_FINIT_MODULE,
	SC_PTRACE, SC_VM_READV, SC_VM_WRITEV, SC_MEMFD_CREATE, SC_USERFAULTFD, SC_BPF,
	SC_SETUID, SC_SETGID, SC_SETREUID, SC_SETREGID, SC_SETRESUID, SC_SETRESGID, SC_CAPSET,
	SC_UNSHARE, SC_SETNS, SC_MPROTECT, SC_MMAP,
};

#define SYS_ENTER(name) SEC("tracepoint/syscalls/sys_enter_" #name) \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)
#define SYS_EXIT(name) SEC("tracepoint/syscalls/sys_exit_" #name) \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)

/*
 * sys_ret is the syscall's result as its exit tracepoint passes it, except
 * for a call a seccomp filter killed: seccomp rolls the registers back for
 * the core dump (the "result" then reads as the syscall's own number),
 * marks the task dead and queues SIGSYS. Such a call never ran; it is
 * reported as refused, -EPERM. Only the dead mark is trusted: a pending
 * SIGSYS (what a trapping filter leaves) can be queued by the process
 * itself, and would let it pass a successful call off as refused. Only a
 * result equal to the syscall number costs the extra read.
 */
#define MAMORI_EPERM 1
#define MAMORI_SECCOMP_MODE_DEAD 3 /* SECCOMP_MODE_FILTER + 1, since 5.17 */
static __always_inline long sys_ret(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	if (ret != (int)ctx->id)
		return ret;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	if (bpf_core_field_exists(t->seccomp) && BPF_CORE_READ(t, seccomp.mode) == MAMORI_SECCOMP_MODE_DEAD)
		return -MAMORI_EPERM;
	return ret;
}

/*
 * ARGS copies the syscall arguments out of an entry context. A probe read,
 * not a direct load: the kernel refuses to attach a program whose direct
 * context loads reach past the syscall's own arguments (EACCES), and this
 * copy is shared by syscalls of every arity. Unused slots hold whatever
 * follows. Only the few entry programs left use it (see exit_take).
 */
#define ARGS(ctx) {0}; bpf_probe_read_kernel(a, sizeof(a), (void *)(ctx) + __builtin_offsetof(struct trace_event_raw_sys_enter, args))

#if defined(__TARGET_ARCH_arm64)
/*
 * arm64's saved user registers (arch/arm64/include/asm/ptrace.h): x0..x5
 * carry the arguments, x0 is overwritten by the result and orig_x0 keeps the
 * first argument. vmlinux.h describes x86's struct pt_regs; the ___arm64
 * flavour (named apart from bpf_tracing.h's) is matched by CO-RE against the running kernel's pt_regs, where
 * regs sits in an anonymous union.
 */
struct pt_regs___mamori_arm64 {
	__u64 regs[31];
	__u64 pstate;
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));
#define SAVED_REGS struct pt_regs___mamori_arm64
#define SAVED_NR syscallno
/* EL0, AArch64 or AArch32: the frame was saved on entry from user mode. */
#define SAVED_FROM_USER(r) (((r)->pstate & 0xf) == 0)
#define SAVED_PADS 1
#elif defined(__TARGET_ARCH_x86)
#define SAVED_REGS struct pt_regs
#define SAVED_NR orig_ax
/* Requested privilege level 3 in the saved code segment: user mode. */
#define SAVED_FROM_USER(r) (((r)->cs & 3) == 3)
/* CONFIG_X86_FRED (6.9+) keeps 16 bytes above the frame. */
#define SAVED_PADS 2
#elif !defined(__TARGET_ARCH_x86)
#error "exit_take reads saved registers: build for x86 or arm64 (bpf2go -target amd64,arm64)"
#endif

/* saved_regs is the task's saved user registers, nr its syscall. */
#ifndef MAMORI_COMPAT
static __always_inline SAVED_REGS *saved_regs(long nr)
{
	return (SAVED_REGS *)bpf_task_pt_regs(bpf_get_current_task_btf());
}
#else
/*
 * Without bpf_task_pt_regs, the saved user registers are found where the
 * kernel keeps them, at the top of the task's kernel stack (task_pt_regs
 * on x86_64 and arm64). The stack's size is a build choice — 16 KiB, 32
 * KiB with KASAN, 64 KiB on arm64 with 64 KiB pages — and x86 kernels with
 * FRED keep 16 bytes above the frame, so each place is tried and a frame
 * is taken only when it was saved from user mode and its syscall number
 * is this call's: a wrong guess reports nothing rather than another call's
 * arguments. Smallest first matters: stacks are aligned to their size, so
 * on a 16 KiB kernel stack+64 KiB may be the top of another task's stack,
 * whose frame could pass both checks; the right frame is met before it.
 */
#define REGS_COPY_MAX 512 /* pt_regs: 168 bytes on x86_64, ~340 on arm64 */
struct regs_copy {
	char b[REGS_COPY_MAX];
};
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct regs_copy);
} regs_copy_map SEC(".maps");

/* saved_regs copies the frame whole, in one read per place tried (a read
 * per field cost ~25 ns each on every syscall exit); its fields are then
 * plain loads, at offsets CO-RE fits to the running kernel's pt_regs. */
static __always_inline SAVED_REGS *saved_regs(long nr)
{
	__u32 zero = 0;
	struct regs_copy *copy = bpf_map_lookup_elem(&regs_copy_map, &zero);
	if (!copy)
		return NULL;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	char *stack = BPF_CORE_READ(t, stack);
	__u32 size = bpf_core_type_size(SAVED_REGS);
	if (size > REGS_COPY_MAX)
		return NULL;
	SAVED_REGS *r = (SAVED_REGS *)copy->b;
#pragma unroll
	for (int shift = 14; shift <= 16; shift++) {
#pragma unroll
		for (int pad = 0; pad < SAVED_PADS; pad++) {
			void *at = stack + (1UL << shift) - 16 * pad - size;
			if (bpf_probe_read_kernel(copy->b, size, at) == 0 && (int)r->SAVED_NR == (int)nr &&
			    SAVED_FROM_USER(r))
				return r;
		}
	}
	return NULL;
}
#endif

/*
 * exit_take fills st->args with the syscall's arguments at its exit, read
 * from the task's saved user registers, which keep them through the call
 * (x86_64: di, si, dx, r10, r8, r9 — only ax takes the result; arm64: see
 * pt_regs___mamori_arm64). So a syscall needs one hook, at exit, instead of an
 * entry that stashes and an exit that takes back: every syscall tracepoint
 * costs ~200 ns per call on this class of machine even with an empty
 * program, and the filtered-out calls (most opens, mmaps) no longer touch a
 * hash map. Returns non-zero when the caller must not report (the agent
 * itself, or paused).
 */
static __always_inline int exit_take(struct trace_event_raw_sys_exit *ctx, struct stash *st)
{
	if (!should_trace())
		return -1;
	SAVED_REGS *r = saved_regs(ctx->id);
	if (!r)
		return -1;
#if defined(__TARGET_ARCH_arm64)
	st->args[0] = r->orig_x0;
	st->args[1] = r->regs[1];
	st->args[2] = r->regs[2];
	st->args[3] = r->regs[3];
	st->args[4] = r->regs[4];
	st->args[5] = r->regs[5];
#else
	st->args[0] = r->di;
	st->args[1] = r->si;
	st->args[2] = r->dx;
	st->args[3] = r->r10;
	st->args[4] = r->r8;
	st->args[5] = r->r9;
#endif
	return 0;
}

/*
 * put_sock fills args[base..base+3] = family, type, local port, remote port
 * and appends one 32-byte string: local address (16) then remote (16).
 */
static __always_inline __u32 put_sock(struct scratch *s, __u32 off, struct file *f, int base)
{
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	s->hdr.args[base & 7] = family;
	s->hdr.args[(base + 1) & 7] = BPF_CORE_READ(sock, type);
	s->hdr.args[(base + 2) & 7] = BPF_CORE_READ(sk, __sk_common.skc_num);
	s->hdr.args[(base + 3) & 7] = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (off > SCRATCH_SIZE - STR_MAX - 2)
		return off;
	char *d = &s->data[BOUND(off + 2)];
	if (family == 10 /* AF_INET6 */) {
		bpf_probe_read_kernel(d, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(d + 16, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		__builtin_memset(d, 0, 32);
		bpf_probe_read_kernel(d, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(d + 16, 4, &sk->__sk_common.skc_daddr);
	}
	s->data[BOUND(off)] = 32;
	s->data[BOUND(off + 1)] = 0;
	s->hdr.nstr++;
	return off + 2 + 32;
}

/* put_cwd appends the task's working directory (for relative paths). */
static __always_inline __u32 put_cwd(struct scratch *s, __u32 off)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(t, fs);
	struct path pwd;
	bpf_probe_read_kernel(&pwd, sizeof(pwd), &fs->pwd);
	return put_path(s, off, &pwd);
}

/* put_base appends the directory a relative path is resolved against: the
 * directory fd of an *at call, the working directory for AT_FDCWD. */
static __always_inline __u32 put_base(struct scratch *s, __u32 off, long dirfd)
{
	if ((int)dirfd == -100 /* AT_FDCWD */)
		return put_cwd(s, off);
	return put_fd_path(s, off, (int)dirfd);
}

#endif
