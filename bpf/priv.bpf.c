// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Privilege and kernel surface: mount, umount, module loads, ptrace,
 * process_vm_readv/writev, memfd_create, userfaultfd, bpf(), credential
 * changes, namespaces, and executable memory. Each is reported at syscall
 * exit with its result, so failed attempts count; only init_module (no exit
 * tracepoint everywhere) and the credential changes (old ids) keep an entry.
 *
 * EV_MOUNT       args: 0 flags; strs: 0 source, 1 target, 2 fs type
 * EV_UMOUNT      args: 0 flags; strs: 0 target
 * EV_MODULE      args: 0 from file (1 finit_module, 0 init_module), 1 image
 *                length or flags; strs: 0 module file (fd walk) or empty, 1 params
 * EV_PTRACE      args: 0 request, 1 target pid (only injection-capable and
 *                anti-debugging requests are sent)
 * EV_PROCESS_VM  args: 0 target pid, 1 write (1) or read (0)
 * EV_MEMFD       args: 0 flags; strs: 0 name; ret = fd
 * EV_USERFAULTFD args: 0 flags; ret = fd
 * EV_BPF         args: 0 cmd, 1 program type (PROG_LOAD) or 0
 * EV_SETID       args: 0 call (0 setuid, 1 setgid, 2 setreuid, 3 setregid,
 *                4 setresuid, 5 setresgid), 1..3 call arguments, 4 old uid,
 *                5 old euid, 6 new uid, 7 new euid (header uid/euid are new too)
 * EV_CAPSET      args: 0 new effective capabilities, 1 old effective
 * EV_UNSHARE     args: 0 flags
 * EV_SETNS       args: 0 fd, 1 nstype; strs: 0 namespace file (fd walk)
 * EV_MPROTECT    args: 0 start, 1 len, 2 prot, 3 1 when the region is anonymous,
 *                4 1 when it is the stack (only changes adding PROT_EXEC)
 * EV_MMAP        args: 0 address (result), 1 len, 2 prot, 3 flags, 4 fd
 *                strs: 0 mapped file (fd walk) (only PROT_EXEC mappings)
 */
#include "syscall.h"

#define PROT_EXEC 4
#define MAP_ANONYMOUS 0x20

/* begin_exit starts the event of a syscall reported at exit, its
 * arguments in st; NULL when it is not reported. */
static __always_inline struct scratch *begin_exit(struct trace_event_raw_sys_exit *ctx, __u32 kind, long ret, struct stash *st)
{
	if (exit_take(ctx, st))
		return NULL;
	struct scratch *s = begin_event(kind);
	if (!s)
		return NULL;
	s->hdr.ret = ret;
	return s;
}

SYS_EXIT(mount)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_MOUNT, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[3];
	__u32 off = put_user_str(s, 0, (void *)st.args[0]);
	off = put_user_str(s, off, (void *)st.args[1]);
	off = put_user_str(s, off, (void *)st.args[2]);
	submit(s, off);
	return 0;
}

SYS_EXIT(umount)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_UMOUNT, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[1];
	submit(s, put_user_str(s, 0, (void *)st.args[0]));
	return 0;
}

/* init_module has no exit tracepoint on every kernel (not on this one), so
 * it is reported at entry: an attempt, result unknown (ret = 0). */
SYS_ENTER(init_module)
{
	if (!should_trace())
		return 0;
	struct scratch *s = begin_event(EV_MODULE);
	if (!s)
		return 0;
	s->hdr.args[0] = 0;
	s->hdr.args[1] = ctx->args[1];
	const char *params = (const char *)ctx->args[2];
	__u32 off = put_empty(s, 0);
	submit(s, put_user_str(s, off, params));
	return 0;
}

SYS_EXIT(finit_module)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_MODULE, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = 1;
	s->hdr.args[1] = st.args[2];
	__u32 off = put_fd_path(s, 0, st.args[0]);
	submit(s, put_user_str(s, off, (void *)st.args[1]));
	return 0;
}

/* ptrace requests that inject, attach or hide: the rest (PEEK loops of a
 * debugger or strace) would flood and say nothing new. */
static __always_inline int ptrace_interesting(long req)
{
	switch (req) {
	case 0:      /* TRACEME */
	case 4:      /* POKETEXT */
	case 5:      /* POKEDATA */
	case 6:      /* POKEUSER */
	case 13:     /* SETREGS */
	case 15:     /* SETFPREGS */
	case 16:     /* ATTACH */
	case 0x4205: /* SETREGSET */
	case 0x4206: /* SEIZE */
		return 1;
	}
	return 0;
}

SYS_EXIT(ptrace)
{
	struct stash st;
	if (exit_take(ctx, &st) || !ptrace_interesting(st.args[0]))
		return 0;
	struct scratch *s = begin_event(EV_PTRACE);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = st.args[1];
	submit(s, 0);
	return 0;
}

static __always_inline int exit_vm(struct trace_event_raw_sys_exit *ctx, long ret, int write)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_PROCESS_VM, ret, &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = write;
	submit(s, 0);
	return 0;
}
SYS_EXIT(process_vm_readv) { return exit_vm(ctx, sys_ret(ctx), 0); }
SYS_EXIT(process_vm_writev) { return exit_vm(ctx, sys_ret(ctx), 1); }

SYS_EXIT(memfd_create)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_MEMFD, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[1];
	submit(s, put_user_str(s, 0, (void *)st.args[0]));
	return 0;
}

SYS_EXIT(userfaultfd)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_USERFAULTFD, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[0];
	submit(s, 0);
	return 0;
}

/* bpf(): map creation, program loads and attachments matter; map lookups
 * do not. */
SYS_EXIT(bpf)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	long cmd = st.args[0];
	if (cmd != 0 && cmd != 5 && cmd != 8 && cmd != 17 && cmd != 28)
		return 0;
	struct scratch *s = begin_event(EV_BPF);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	s->hdr.args[0] = st.args[0];
	if (st.args[0] == 5) {
		__u32 type = 0;
		bpf_probe_read_user(&type, sizeof(type), (void *)st.args[1]);
		s->hdr.args[1] = type;
	}
	submit(s, 0);
	return 0;
}

/* Credential changes: the old ids are gone by the exit, so these keep an
 * entry that stashes them. */
static __always_inline int enter_setid(__u32 fam, unsigned long *args)
{
	if (!should_trace())
		return 0;
	unsigned long a[6] = {args[0], args[1], args[2], 0, 0, 0};
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	a[4] = BPF_CORE_READ(t, cred, uid.val);
	a[5] = BPF_CORE_READ(t, cred, euid.val);
	stash_put(fam, a);
	return 0;
}

static __always_inline int exit_setid(__u32 fam, long ret)
{
	struct stash st;
	if (stash_take(fam, &st))
		return 0;
	struct scratch *s = begin_event(EV_SETID);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	s->hdr.args[0] = fam - SC_SETUID;
	s->hdr.args[1] = st.args[0];
	s->hdr.args[2] = st.args[1];
	s->hdr.args[3] = st.args[2];
	s->hdr.args[4] = st.args[4];
	s->hdr.args[5] = st.args[5];
	s->hdr.args[6] = s->hdr.uid;
	s->hdr.args[7] = s->hdr.euid;
	submit(s, 0);
	return 0;
}

#define SETID(name, fam)                                         \
	SYS_ENTER(name) { unsigned long a[6] = ARGS(ctx); return enter_setid(fam, a); }  \
	SYS_EXIT(name) { return exit_setid(fam, sys_ret(ctx)); }
SETID(setuid, SC_SETUID)
SETID(setgid, SC_SETGID)
SETID(setreuid, SC_SETREUID)
SETID(setregid, SC_SETREGID)
SETID(setresuid, SC_SETRESUID)
SETID(setresgid, SC_SETRESGID)

/*
 * Before Linux 6.3 kernel_cap_t was two 32-bit words (struct
 * kernel_cap_struct { __u32 cap[2]; }); since, one 64-bit val. CO-RE
 * picks the layout the running kernel has.
 */
struct kernel_cap_struct___pre63 {
	__u32 cap[2];
} __attribute__((preserve_access_index));
struct cred___pre63 {
	struct kernel_cap_struct___pre63 cap_effective;
} __attribute__((preserve_access_index));

static __always_inline __u64 cap_effective(struct task_struct *t)
{
	const struct cred *c = BPF_CORE_READ(t, cred);
	if (bpf_core_field_exists(c->cap_effective.val))
		return BPF_CORE_READ(c, cap_effective.val);
	struct cred___pre63 *o = (void *)c;
	__u64 lo = BPF_CORE_READ(o, cap_effective.cap[0]);
	__u64 hi = BPF_CORE_READ(o, cap_effective.cap[1]);
	return hi << 32 | lo;
}

SYS_ENTER(capset)
{
	if (!should_trace())
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	unsigned long a[6] = {};
	a[0] = cap_effective(t);
	stash_put(SC_CAPSET, a);
	return 0;
}
SYS_EXIT(capset)
{
	struct stash st;
	if (stash_take(SC_CAPSET, &st))
		return 0;
	struct scratch *s = begin_event(EV_CAPSET);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	s->hdr.args[0] = cap_effective(t);
	s->hdr.args[1] = st.args[0];
	submit(s, 0);
	return 0;
}

SYS_EXIT(unshare)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_UNSHARE, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[0];
	submit(s, 0);
	return 0;
}

SYS_EXIT(setns)
{
	struct stash st;
	struct scratch *s = begin_exit(ctx, EV_SETNS, sys_ret(ctx), &st);
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = st.args[1];
	submit(s, put_fd_path(s, 0, st.args[0]));
	return 0;
}

struct vma_ctx {
	__u64 anon;
	__u64 stack;
};

#ifndef MAMORI_COMPAT
static long vma_cb(struct task_struct *task, struct vm_area_struct *vma, struct vma_ctx *c)
{
	c->anon = BPF_CORE_READ(vma, vm_file) == NULL;
	unsigned long ss = BPF_CORE_READ(task, mm, start_stack);
	c->stack = BPF_CORE_READ(vma, vm_start) <= ss && ss < BPF_CORE_READ(vma, vm_end);
	return 0;
}
#endif

#ifdef MAMORI_COMPAT
/* The VMA tree of kernels before 6.1 (an rbtree, later a maple tree): the
 * kernels without bpf_find_vma (5.17) that the compat objects are for. */
struct vm_area_struct___rb {
	unsigned long vm_start;
	unsigned long vm_end;
	struct rb_node vm_rb;
	void *vm_mm;
	struct file *vm_file;
} __attribute__((preserve_access_index));

struct mm_struct___rb {
	struct rb_root mm_rb;
	unsigned long start_stack;
} __attribute__((preserve_access_index));

#define VMA_TREE_DEPTH 64 /* an rbtree's height is at most 2*log2(n + 1) */

/* find_vma_compat fills c for the VMA holding addr; c stays zero when there
 * is none, or the kernel has no rbtree (forced compat on 6.1+: anonymous
 * memory made executable then goes unflagged, which the agent warns of).
 * Unlike bpf_find_vma it walks without mmap_lock: a thread remapping at the
 * same moment can send it down a stale branch, so a VMA is believed only
 * when it still belongs to this mm; the worst left is a miss. */
static __always_inline void find_vma_compat(unsigned long addr, struct vma_ctx *c)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct mm_struct___rb *mm = (void *)BPF_CORE_READ(t, mm);
	if (!mm || !bpf_core_field_exists(mm->mm_rb))
		return;
	__u32 off = bpf_core_field_offset(struct vm_area_struct___rb, vm_rb);
	struct rb_node *n = BPF_CORE_READ(mm, mm_rb.rb_node);
	for (int i = 0; i < VMA_TREE_DEPTH && n; i++) {
		struct vm_area_struct___rb *v = (void *)((char *)n - off);
		unsigned long start = BPF_CORE_READ(v, vm_start);
		unsigned long end = BPF_CORE_READ(v, vm_end);
		if (addr < start) {
			n = BPF_CORE_READ(n, rb_left);
		} else if (addr >= end) {
			n = BPF_CORE_READ(n, rb_right);
		} else {
			if (BPF_CORE_READ(v, vm_mm) != mm)
				return;
			c->anon = BPF_CORE_READ(v, vm_file) == NULL;
			unsigned long ss = BPF_CORE_READ(mm, start_stack);
			c->stack = start <= ss && ss < end;
			return;
		}
	}
}
#endif

SYS_EXIT(mprotect)
{
	struct stash st;
	if (exit_take(ctx, &st) || !(st.args[2] & PROT_EXEC))
		return 0;
	struct scratch *s = begin_event(EV_MPROTECT);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = st.args[1];
	s->hdr.args[2] = st.args[2];
	struct vma_ctx c = {};
#ifndef MAMORI_COMPAT
	struct task_struct *t = bpf_get_current_task_btf();
	bpf_find_vma(t, st.args[0], vma_cb, &c, 0);
#else
	find_vma_compat(st.args[0], &c);
#endif
	s->hdr.args[3] = c.anon;
	s->hdr.args[4] = c.stack;
	submit(s, 0);
	return 0;
}

SYS_EXIT(mmap)
{
	struct stash st;
	if (exit_take(ctx, &st) || !(st.args[2] & PROT_EXEC))
		return 0;
	struct scratch *s = begin_event(EV_MMAP);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	s->hdr.args[0] = sys_ret(ctx);
	s->hdr.args[1] = st.args[1];
	s->hdr.args[2] = st.args[2];
	s->hdr.args[3] = st.args[3];
	s->hdr.args[4] = st.args[4];
	__u32 off;
	if (st.args[3] & MAP_ANONYMOUS)
		off = put_empty(s, 0);
	else
		off = put_fd_path(s, 0, st.args[4]);
	submit(s, off);
	return 0;
}
