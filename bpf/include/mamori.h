/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared record layout, maps and helpers for every mamori BPF program.
 *
 * Every event leaves the kernel as one record: a fixed header, six numeric
 * argument slots whose meaning depends on the kind, and a table of up to
 * MAX_STRS length-prefixed strings. One layout for every kind keeps the C
 * side small and lets the Go decoder stay a single, fuzzable function.
 */
#ifndef MAMORI_H
#define MAMORI_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

/* Kinds: keep in sync with internal/event/kind.go (a test checks it). */
enum event_kind {
	EV_EXEC = 1,
	EV_FORK = 2,
	EV_EXIT = 3,
	EV_OPEN = 4,
	EV_RENAME = 5,
	EV_LINK = 6,
	EV_SYMLINK = 7,
	EV_UNLINK = 8,
	EV_CHMOD = 9,
	EV_CHOWN = 10,
	EV_SOCKET = 11,
	EV_CONNECT = 12,
	EV_BIND = 13,
	EV_LISTEN = 14,
	EV_ACCEPT = 15,
	EV_DUP = 16,
	EV_DNS = 17,
	EV_MOUNT = 18,
	EV_UMOUNT = 19,
	EV_MODULE = 20,
	EV_PTRACE = 21,
	EV_PROCESS_VM = 22,
	EV_MEMFD = 23,
	EV_USERFAULTFD = 24,
	EV_BPF = 25,
	EV_SETID = 26,
	EV_CAPSET = 27,
	EV_UNSHARE = 28,
	EV_SETNS = 29,
	EV_MPROTECT = 30,
	EV_MMAP = 31,
	EV_CGROUP_MKDIR = 32,
	EV_CGROUP_RMDIR = 33,
	EV_KIND_MAX = 34,
};

/*
 * Two builds of every object come from this C (internal/sensor/gen.go):
 * the default one for kernels with every helper below, and the compat one
 * (MAMORI_COMPAT) for kernels that lack some — Linux 5.10 to 5.16, e.g.
 * Amazon Linux 2 and Ubuntu 22.04. The loader picks by probing the
 * helpers, not by version. The compat build trades speed for reach:
 *   bpf_loop (5.17)                  -> bounded loops of global-function
 *                                       steps (MAMORI_LOOP, below)
 *   bpf_get_current_task_btf (5.11)  -> bpf_get_current_task + CO-RE reads
 *   bpf_task_pt_regs (5.15)          -> the saved registers found at the top
 *                                       of the task's kernel stack, checked
 *                                       for user mode and the syscall number
 *   bpf_find_vma (5.17)              -> a walk of the mm's VMA rbtree
 * MAMORI_LOOP runs fn(i, ctx) for i in [0, n) until it returns non-zero.
 * bpf_loop lets the verifier check one step instead of every iteration.
 * Without it, each step is a global function (MAMORI_COMPAT_STEP), which
 * the verifier also checks once, on its own, however often it is called:
 * followed inline, the steps' ways through multiply and a program passes
 * the verifier's million instructions. A global function of Linux 5.10
 * takes numbers only, so the loop's state is copied to a per-CPU map the
 * step looks up, and back after the loop; a step finds pointers into the
 * record again from their own maps (scratch_get).
 */
#ifdef MAMORI_COMPAT
#define MAMORI_COMPAT_STEP(fn, ctype)                                 \
	struct {                                                      \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);              \
		__uint(max_entries, 1);                               \
		__type(key, __u32);                                   \
		__uint(value_size, sizeof(ctype));                    \
	} fn##_state SEC(".maps");                                    \
	__attribute__((noinline)) int fn##_global(__u32 i)            \
	{                                                             \
		__u32 zero = 0;                                       \
		ctype *c = bpf_map_lookup_elem(&fn##_state, &zero);   \
		if (!c)                                               \
			return 1;                                     \
		return fn(i, c);                                      \
	}
#define MAMORI_LOOP(n, fn, ctx)                                           \
	do {                                                              \
		__u32 __zero = 0;                                         \
		typeof(ctx) __st = bpf_map_lookup_elem(&fn##_state, &__zero); \
		if (!__st)                                                \
			break;                                            \
		*__st = *(ctx);                                           \
		for (__u32 __i = 0; __i < (n); __i++)                     \
			if (fn##_global(__i))                             \
				break;                                    \
		*(ctx) = *__st;                                           \
	} while (0)
#else
#define MAMORI_COMPAT_STEP(fn, ctype)
#define MAMORI_LOOP(n, fn, ctx) bpf_loop(n, fn, ctx, 0)
#endif

#define STR_MAX 4096           /* one string's cap (PATH_MAX) */
#define SCRATCH_SIZE 16384     /* whole record cap, power of two (per-CPU values max out at 32 KiB) */
#define SCRATCH_MASK (SCRATCH_SIZE - 1)
#define NAME_MAX_B 256
#define PATH_DEPTH 48

/* Flag bits in event_hdr.flags. */
#define F_TRUNCATED   (1 << 0) /* a string hit its cap or the path walk its depth */
#define F_PATH_REV    (1 << 1) /* str[0] is a dentry walk, leaf first (user space reverses) */
#define F_BY_INODE    (1 << 2) /* EV_OPEN: sent because the file opened is a read-watched one */
#define F_STDIO_INET  (1 << 3) /* EV_EXEC: fd 0 or 1 of the new image is an inet or inet6 socket */
#define F_CREATED     (1 << 4) /* EV_OPEN: the call created the file (FMODE_CREATED) */

struct event_hdr {
	__u64 ts_ns;        /* bpf_ktime_get_boot_ns */
	__u64 cgroup_id;    /* cgroup v2 id of the task */
	__u64 start_ns;     /* thread-group leader start (boot ns): process identity */
	__u64 pstart_ns;    /* parent's leader start (boot ns) */
	__s64 ret;          /* syscall result, or 0 */
	__u32 kind;
	__u32 flags;
	__u32 pid;          /* tgid */
	__u32 tid;
	__u32 ns_pid;       /* pid in the task's own pid namespace */
	__u32 ppid;
	__u32 uid, gid, euid, egid;
	__u32 nstr;         /* strings that follow args */
	__u32 str_rev;      /* bitmask: which strings are leaf-first dentry walks */
	char comm[16];
	__u64 args[8];
};

/* Record = event_hdr, then nstr times { __u16 len; char bytes[len]; }. */

/*
 * BOUND masks a scratch offset so the verifier can bound it. The barrier
 * stops clang from dropping the mask when it can prove it redundant: the
 * verifier cannot always follow that proof.
 */
#define BOUND(x) ({ __u32 __v = (x); asm volatile("" : "+r"(__v)); __v & SCRATCH_MASK; })

struct scratch {
	struct event_hdr hdr;
	/* slack past SCRATCH_SIZE lets the verifier prove masked writes in bounds */
	char data[SCRATCH_SIZE + STR_MAX + NAME_MAX_B];
};

/* Per-syscall stash: arguments from sys_enter, consumed at sys_exit. */
struct stash {
	__u64 args[6];
	__u32 nr;   /* our family tag, to reject a mismatched exit */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* Drops by kind: reserve/output failures in the kernel. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_KIND_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Events emitted by kind (for rates and the zero-loss proof). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_KIND_MAX);
	__type(key, __u32);
	__type(value, __u64);
} emitted SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* tid << 8 | family */
	__type(value, struct stash);
} stash_map SEC(".maps");

/*
 * stash_pending counts this family's stashed syscalls still in flight, so
 * that the exit of a syscall nobody stashed (most opens) skips the hash
 * lookup. It can only drift upwards (an LRU eviction loses an entry
 * without its take), which costs lookups, never events.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} stash_pending SEC(".maps");

/* Runtime configuration written by user space before attach. */
struct config {
	__u32 self_pid;     /* the agent: its own syscalls are not reported */
	__u32 enabled;      /* 0 pauses every program (user space toggles it) */
	__u16 dns_ports[4]; /* ports DNS is read on; all 0: port 53 */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config_map SEC(".maps");

static __always_inline void count(void *map, __u32 kind)
{
	__u64 *v = bpf_map_lookup_elem(map, &kind);
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* should_trace filters the agent itself and honours the pause switch. */
static __always_inline int should_trace(void)
{
	__u32 zero = 0;
	struct config *c = bpf_map_lookup_elem(&config_map, &zero);
	if (!c || !c->enabled)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return tgid != c->self_pid;
}

static __always_inline struct scratch *scratch_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

static __always_inline __u32 ns_pid_of(struct task_struct *t)
{
	struct pid *p = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(p, level);
	return BPF_CORE_READ(p, numbers[level & 7].nr);
}

/*
 * fill_hdr writes the process part of the header for the current task.
 * The task is reached through its BTF pointer, so each field is a plain
 * load (a faulting one is caught by the kernel) rather than a helper call
 * per field: that halves the cost of every event. Only the namespace pid,
 * an index into a flexible array, needs a probe read. The compat build,
 * without that pointer, reads each field with CO-RE.
 */
static __always_inline void fill_hdr(struct event_hdr *h, __u32 kind)
{
#ifndef MAMORI_COMPAT
	struct task_struct *t = bpf_get_current_task_btf();
#else
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
#endif
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 ug = bpf_get_current_uid_gid();

	h->ts_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->kind = kind;
	h->flags = 0;
	h->ret = 0;
	h->pid = pt >> 32;
	h->tid = (__u32)pt;
	h->uid = (__u32)ug;
	h->gid = ug >> 32;
#ifndef MAMORI_COMPAT
	const struct cred *c = t->cred;
	h->euid = c->euid.val;
	h->egid = c->egid.val;
	h->start_ns = t->group_leader->start_boottime;
	struct task_struct *parent = t->real_parent;
	h->ppid = parent->tgid;
	h->pstart_ns = parent->group_leader->start_boottime;
	struct pid *p = t->thread_pid;
	unsigned int level = p->level;
#else
	h->euid = BPF_CORE_READ(t, cred, euid.val);
	h->egid = BPF_CORE_READ(t, cred, egid.val);
	h->start_ns = BPF_CORE_READ(t, group_leader, start_boottime);
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	h->ppid = BPF_CORE_READ(parent, tgid);
	h->pstart_ns = BPF_CORE_READ(parent, group_leader, start_boottime);
	struct pid *p = BPF_CORE_READ(t, thread_pid);
	unsigned int level = BPF_CORE_READ(p, level);
#endif
	h->ns_pid = BPF_CORE_READ(p, numbers[level & 7].nr);
	h->nstr = 0;
	h->str_rev = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
#pragma unroll
	for (int i = 0; i < 8; i++)
		h->args[i] = 0;
}

/* begin_event returns a scratch record with a filled header, or NULL. */
static __always_inline struct scratch *begin_event(__u32 kind)
{
	struct scratch *s = scratch_get();
	if (!s)
		return NULL;
	fill_hdr(&s->hdr, kind);
	return s;
}

/*
 * String writers append one length-prefixed string at *off. They return the
 * new offset. Offsets are masked so the verifier can bound every access; a
 * string that would not fit is truncated and flagged.
 */
static __always_inline __u32 put_user_str(struct scratch *s, __u32 off, const void *src)
{
	if (off > SCRATCH_SIZE - STR_MAX - 2) {
		s->hdr.flags |= F_TRUNCATED; /* record full: later strings are dropped */
		return off;
	}
	long n = 0;
	if (src)
		n = bpf_probe_read_user_str(&s->data[BOUND(off + 2)], STR_MAX, src);
	if (n < 0)
		n = 0;
	if (n >= STR_MAX)
		s->hdr.flags |= F_TRUNCATED;
	/* store length without the trailing NUL */
	__u16 len = n > 0 ? n - 1 : 0;
	s->data[BOUND(off)] = len & 0xff;
	s->data[BOUND(off + 1)] = len >> 8;
	s->hdr.nstr++;
	return off + 2 + len;
}

static __always_inline __u32 put_kernel_str(struct scratch *s, __u32 off, const void *src, __u32 max)
{
	if (off > SCRATCH_SIZE - STR_MAX - 2) {
		s->hdr.flags |= F_TRUNCATED; /* record full: later strings are dropped */
		return off;
	}
	long n = 0;
	if (src)
		n = bpf_probe_read_kernel_str(&s->data[BOUND(off + 2)], max > STR_MAX ? STR_MAX : max, src);
	if (n < 0)
		n = 0;
	__u16 len = n > 0 ? n - 1 : 0;
	s->data[BOUND(off)] = len & 0xff;
	s->data[BOUND(off + 1)] = len >> 8;
	s->hdr.nstr++;
	return off + 2 + len;
}

/* put_user_bytes copies a raw user region (argv, sockaddr) of up to max bytes. */
static __always_inline __u32 put_user_bytes(struct scratch *s, __u32 off, const void *src, __u64 size, __u32 max)
{
	if (off > SCRATCH_SIZE - STR_MAX - 2) {
		s->hdr.flags |= F_TRUNCATED; /* record full: later strings are dropped */
		return off;
	}
	if (size > max) {
		size = max;
		s->hdr.flags |= F_TRUNCATED;
	}
	size &= (STR_MAX - 1);
	if (src && size > 0 && bpf_probe_read_user(&s->data[BOUND(off + 2)], size, src) < 0)
		size = 0;
	if (!src)
		size = 0;
	s->data[BOUND(off)] = size & 0xff;
	s->data[BOUND(off + 1)] = size >> 8;
	s->hdr.nstr++;
	return off + 2 + size;
}

static __always_inline __u32 put_empty(struct scratch *s, __u32 off)
{
	if (off > SCRATCH_SIZE - 2) {
		s->hdr.flags |= F_TRUNCATED;
		return off;
	}
	s->data[BOUND(off)] = 0;
	s->data[BOUND(off + 1)] = 0;
	s->hdr.nstr++;
	return off + 2;
}

/*
 * put_path walks a dentry up to the root of its mount namespace and writes
 * the components leaf first, each followed by '/'. User space reverses them;
 * writing forward keeps every access bounded for the verifier. The walk runs
 * under MAMORI_LOOP so the verifier checks one step, not every depth.
 */
struct walk_ctx {
	struct scratch *s;
	struct dentry *d;
	struct vfsmount *vm;
	struct mount *m;
	__u32 start;
	__u32 pos;
	__u32 done;
};

static long walk_step(__u32 i, struct walk_ctx *c)
{
#ifndef MAMORI_COMPAT
	struct scratch *s = c->s;
#else
	struct scratch *s = scratch_get();
#endif
	if (!s)
		return 1;
	/* Locals, not c->field, inside BPF_CORE_READ: the relocation would
	 * otherwise name walk_ctx, which the kernel's BTF does not have. */
	struct dentry *d = c->d;
	struct vfsmount *vm = c->vm;
	struct mount *m = c->m;
	struct dentry *root = BPF_CORE_READ(vm, mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == root || d == parent) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (m == mp) {
			c->done = 1; /* reached the namespace root */
			return 1;
		}
		c->d = BPF_CORE_READ(m, mnt_mountpoint);
		c->m = mp;
		c->vm = &mp->mnt;
		return 0;
	}
	if (c->pos > STR_MAX - NAME_MAX_B - 1)
		return 1;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	long n = bpf_probe_read_kernel_str(&s->data[BOUND(c->start + c->pos)], NAME_MAX_B, name);
	if (n <= 1) {
		c->done = 1;
		return 1;
	}
	s->data[BOUND(c->start + c->pos + n - 1)] = '/';
	c->pos += n;
	c->d = parent;
	return 0;
}
MAMORI_COMPAT_STEP(walk_step, struct walk_ctx)

static __always_inline __u32 put_path(struct scratch *s, __u32 off, struct path *p)
{
	if (off > SCRATCH_SIZE - STR_MAX - 2) {
		s->hdr.flags |= F_TRUNCATED;
		return off;
	}
	struct walk_ctx c = {.s = s, .start = off + 2};
	c.d = BPF_CORE_READ(p, dentry);
	c.vm = BPF_CORE_READ(p, mnt);
	c.m = container_of(c.vm, struct mount, mnt);
	s->hdr.str_rev |= 1 << (s->hdr.nstr & 31);
	MAMORI_LOOP(PATH_DEPTH, walk_step, &c);
	if (!c.done)
		s->hdr.flags |= F_TRUNCATED;
	__u32 pos = c.pos;
	if (pos > STR_MAX)
		pos = STR_MAX;
	/* Changes nothing, but bounds the register the compiler goes on with
	 * (its clamp may be of a copy): the compat walk's pos comes from a map. */
	pos = BOUND(pos);
	s->data[BOUND(off)] = pos & 0xff;
	s->data[BOUND(off + 1)] = pos >> 8;
	s->hdr.nstr++;
	return off + 2 + pos;
}

/* file_of_fd returns the current task's file for fd, or NULL. */
static __always_inline struct file *file_of_fd(long fd)
{
	if (fd < 0)
		return NULL;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned long)fd >= max)
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* is_socket_file: f is a socket's file. */
static __always_inline int is_socket_file(struct file *f)
{
	if (!f)
		return 0;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & 00170000) == 0140000;
}

static __always_inline __u32 put_fd_path(struct scratch *s, __u32 off, long fd)
{
	struct file *f = file_of_fd(fd);
	if (!f)
		return put_empty(s, off);
	struct path p;
	bpf_probe_read_kernel(&p, sizeof(p), &f->f_path);
	return put_path(s, off, &p);
}

/*
 * Wake the reader only when a batch is waiting: a wakeup per record costs
 * the agent a syscall per event. The reader also polls with a short
 * deadline, so a lone record waits at most that long.
 */
#define WAKEUP_BYTES (256 * 1024)

static __always_inline __u64 wakeup_flag(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* submit sends the record; failures are counted, never silent. */
static __always_inline void submit(struct scratch *s, __u32 off)
{
	__u32 kind = s->hdr.kind;
	__u64 size = sizeof(struct event_hdr) + off;
	if (size > sizeof(struct scratch))
		size = sizeof(struct scratch);
	if (bpf_ringbuf_output(&events, s, size, wakeup_flag()) < 0)
		count(&drops, kind);
	else
		count(&emitted, kind);
}

/* Stash helpers for syscalls whose result we need (attempts count). */
static __always_inline void stash_put(__u32 family, unsigned long *args)
{
	/* args must point at a local copy: ctx pointers cannot be passed on. */
	__u64 key = ((__u64)(__u32)bpf_get_current_pid_tgid() << 8) | family;
	struct stash st = {};
#pragma unroll
	for (int i = 0; i < 6; i++)
		st.args[i] = args[i];
	st.nr = family;
	__u32 zero = 0;
	__u64 *pending = bpf_map_lookup_elem(&stash_pending, &zero);
	if (bpf_map_update_elem(&stash_map, &key, &st, BPF_NOEXIST) == 0) {
		if (pending)
			__sync_fetch_and_add(pending, 1);
	} else {
		/* A stale entry of this thread (its exit never ran): replace it. */
		bpf_map_update_elem(&stash_map, &key, &st, BPF_ANY);
	}
}

static __always_inline int stash_take(__u32 family, struct stash *out)
{
	__u32 zero = 0;
	__u64 *pending = bpf_map_lookup_elem(&stash_pending, &zero);
	if (pending && *pending == 0)
		return -1;
	__u64 key = ((__u64)(__u32)bpf_get_current_pid_tgid() << 8) | family;
	struct stash *st = bpf_map_lookup_elem(&stash_map, &key);
	if (!st)
		return -1;
	__builtin_memcpy(out, st, sizeof(*out));
	if (bpf_map_delete_elem(&stash_map, &key) == 0 && pending)
		__sync_fetch_and_add(pending, -1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#endif
