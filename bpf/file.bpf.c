// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * File operations: open, rename, link, symlink, unlink, chmod, chown.
 *
 * Opens are the hottest syscall on most hosts, so they are filtered in the
 * kernel: an absolute path is looked up in the watch_paths LPM trie (longest
 * prefix wins, its value says whether reads, writes or both matter); an
 * open that no entry watches costs one string read and one lookup and
 * reaches nothing else. Relative paths with write intent are always sent
 * (user space resolves them against the cwd and filters).
 *
 * EV_OPEN    args: 0 flags, 1 mode, 2 dfd, 3 watch bits; ret = fd or -errno
 *            strs: 0 resolved path (walk of the new fd; empty on failure),
 *                  1 path as passed, 2 cwd when the path is relative
 * EV_RENAME, EV_LINK, EV_SYMLINK
 *            args: 0 flags; strs: 0 old, 1 new, 2 cwd when either is relative
 * EV_UNLINK  args: 0 flags (AT_REMOVEDIR for rmdir); strs: 0 path, 1 cwd if relative
 * EV_CHMOD   args: 0 mode, 1 fd (-1 when by path); strs: 0 path or fd walk, 1 cwd if relative
 * EV_CHOWN   args: 0 uid, 1 gid, 2 fd (-1 when by path), 3 flags; strs as EV_CHMOD
 */
#include "syscall.h"

#define PATH_KEY_MAX 128
#define WATCH_WRITE 1
#define WATCH_READ 2

struct path_key {
	__u32 prefixlen;
	char data[PATH_KEY_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct path_key);
	__type(value, __u32);
} watch_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_key);
} key_scratch SEC(".maps");

/*
 * watch_roots is a 256-bit set of the characters that follow the leading
 * '/' in some watched prefix (user space fills it with the trie). A path
 * whose first character is not in it (/tmp, /dev, /opt, /app, ...) is
 * rejected without the trie walk.
 */
struct roots {
	__u64 bits[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct roots);
} watch_roots SEC(".maps");

static __always_inline int root_watched(unsigned char c)
{
	__u32 zero = 0;
	struct roots *r = bpf_map_lookup_elem(&watch_roots, &zero);
	if (!r)
		return 1;
	return (r->bits[(c >> 6) & 3] >> (c & 63)) & 1;
}

/* watch_bits returns what the watch list says about a user path; relative
 * paths return WATCH_WRITE|WATCH_READ|4 so the caller decides. */
static __always_inline __u32 watch_bits(const char *upath)
{
	__u32 zero = 0;
	struct path_key *k = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->data, PATH_KEY_MAX, upath);
	if (n <= 1)
		return 0;
	if (k->data[0] != '/')
		return 4 | WATCH_WRITE;
	if (!root_watched((unsigned char)k->data[1]))
		return 0;
	k->prefixlen = (n - 1) * 8;
	__u32 *v = bpf_map_lookup_elem(&watch_paths, k);
	return v ? *v : 0;
}

#define O_ACCMODE 3
#define O_CREAT 0100
#define O_TRUNC 01000

static __always_inline int open_interesting(const char *upath, __u64 flags)
{
	__u32 bits = watch_bits(upath);
	int write = (flags & O_ACCMODE) != 0 || (flags & (O_CREAT | O_TRUNC));
	if (write)
		return bits & WATCH_WRITE;
	return bits & WATCH_READ;
}

static __always_inline int enter_open_common(__u32 fam, const char *upath, __u64 flags, unsigned long *args)
{
	if (!should_trace())
		return 0;
	if (!open_interesting(upath, flags))
		return 0;
	stash_put(fam, args);
	return 0;
}

/* exit_open_common emits one EV_OPEN; pi is the index of the path arg. */
static __always_inline int exit_open_common(__u32 fam, long ret, int pi)
{
	struct stash st;
	if (stash_take(fam, &st))
		return 0;
	struct scratch *s = begin_event(EV_OPEN);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	const char *up = (const char *)st.args[pi & 3];
	/* open(path, flags, mode) and openat(dfd, path, flags, mode) */
	s->hdr.args[0] = st.args[pi + 1];
	s->hdr.args[1] = st.args[pi + 2];
	if (fam == SC_CREAT) {
		s->hdr.args[0] = 01 | O_CREAT | O_TRUNC;
		s->hdr.args[1] = st.args[1];
	}
	s->hdr.args[2] = (fam == SC_OPEN || fam == SC_CREAT) ? (__u64)-100 : st.args[0];
	if (fam == SC_OPENAT2) {
		__u64 how[2] = {};
		bpf_probe_read_user(how, sizeof(how), (void *)st.args[2]);
		s->hdr.args[0] = how[0];
		s->hdr.args[1] = how[1];
	}
	__u32 off = ret >= 0 ? put_fd_path(s, 0, ret) : put_empty(s, 0);
	off = put_user_str(s, off, up);
	char c = 0;
	bpf_probe_read_user(&c, 1, up);
	if (c != '/')
		off = put_cwd(s, off);
	submit(s, off);
	return 0;
}

SYS_ENTER(openat) { unsigned long a[6] = ARGS(ctx); return enter_open_common(SC_OPENAT, (const char *)a[1], a[2], a); }
SYS_EXIT(openat) { return exit_open_common(SC_OPENAT, ctx->ret, 1); }
SYS_ENTER(open) { unsigned long a[6] = ARGS(ctx); return enter_open_common(SC_OPEN, (const char *)a[0], a[1], a); }
SYS_EXIT(open) { return exit_open_common(SC_OPEN, ctx->ret, 0); }
SYS_ENTER(creat) { unsigned long a[6] = ARGS(ctx); return enter_open_common(SC_CREAT, (const char *)a[0], 01 | O_CREAT | O_TRUNC, a); }
SYS_EXIT(creat) { return exit_open_common(SC_CREAT, ctx->ret, 0); }

SYS_ENTER(openat2)
{
	__u64 flags = 0;
	bpf_probe_read_user(&flags, sizeof(flags), (void *)ctx->args[2]);
	unsigned long a[6] = ARGS(ctx);
	return enter_open_common(SC_OPENAT2, (const char *)a[1], flags, a);
}
SYS_EXIT(openat2) { return exit_open_common(SC_OPENAT2, ctx->ret, 1); }

/* Two-path operations: a rename or link touching a watched path (or a
 * relative one) is sent. */
static __always_inline int enter_two(__u32 fam, const char *a, const char *b, unsigned long *args)
{
	if (!should_trace())
		return 0;
	if (!(watch_bits(a) & WATCH_WRITE) && !(watch_bits(b) & WATCH_WRITE))
		return 0;
	stash_put(fam, args);
	return 0;
}

static __always_inline int exit_two(__u32 fam, __u32 kind, long ret, int ai, int bi)
{
	struct stash st;
	if (stash_take(fam, &st))
		return 0;
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	const char *a = (const char *)st.args[ai];
	const char *b = (const char *)st.args[bi];
	if (fam == SC_RENAMEAT2 || fam == SC_LINKAT)
		s->hdr.args[0] = st.args[4];
	__u32 off = put_user_str(s, 0, a);
	off = put_user_str(s, off, b);
	char ca = 0, cb = 0;
	bpf_probe_read_user(&ca, 1, a);
	bpf_probe_read_user(&cb, 1, b);
	if (ca != '/' || cb != '/')
		off = put_cwd(s, off);
	submit(s, off);
	return 0;
}

SYS_ENTER(rename) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_RENAME, (void *)a[0], (void *)a[1], a); }
SYS_EXIT(rename) { return exit_two(SC_RENAME, EV_RENAME, ctx->ret, 0, 1); }
SYS_ENTER(renameat) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_RENAMEAT, (void *)a[1], (void *)a[3], a); }
SYS_EXIT(renameat) { return exit_two(SC_RENAMEAT, EV_RENAME, ctx->ret, 1, 3); }
SYS_ENTER(renameat2) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_RENAMEAT2, (void *)a[1], (void *)a[3], a); }
SYS_EXIT(renameat2) { return exit_two(SC_RENAMEAT2, EV_RENAME, ctx->ret, 1, 3); }
SYS_ENTER(link) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_LINK, (void *)a[0], (void *)a[1], a); }
SYS_EXIT(link) { return exit_two(SC_LINK, EV_LINK, ctx->ret, 0, 1); }
SYS_ENTER(linkat) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_LINKAT, (void *)a[1], (void *)a[3], a); }
SYS_EXIT(linkat) { return exit_two(SC_LINKAT, EV_LINK, ctx->ret, 1, 3); }
SYS_ENTER(symlink) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_SYMLINK, (void *)a[1], (void *)a[1], a); }
SYS_EXIT(symlink) { return exit_two(SC_SYMLINK, EV_SYMLINK, ctx->ret, 0, 1); }
SYS_ENTER(symlinkat) { unsigned long a[6] = ARGS(ctx); return enter_two(SC_SYMLINKAT, (void *)a[2], (void *)a[2], a); }
SYS_EXIT(symlinkat) { return exit_two(SC_SYMLINKAT, EV_SYMLINK, ctx->ret, 0, 2); }

/* One-path operations. */
static __always_inline int enter_one(__u32 fam, const char *p, unsigned long *args, int always)
{
	if (!should_trace())
		return 0;
	if (!always && !(watch_bits(p) & WATCH_WRITE))
		return 0;
	stash_put(fam, args);
	return 0;
}

static __always_inline int exit_one(__u32 fam, __u32 kind, long ret, int pi, int fdi)
{
	struct stash st;
	if (stash_take(fam, &st))
		return 0;
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	__u32 off;
	const char *p = 0;
	if (pi >= 0) {
		p = (const char *)st.args[pi & 3];
		off = put_user_str(s, 0, p);
	} else {
		off = put_fd_path(s, 0, st.args[fdi & 3]);
	}
	switch (fam) {
	case SC_UNLINK:
		s->hdr.args[0] = 0;
		break;
	case SC_RMDIR:
		s->hdr.args[0] = 0x200; /* AT_REMOVEDIR */
		break;
	case SC_UNLINKAT:
		s->hdr.args[0] = st.args[2];
		break;
	case SC_CHMOD:
		s->hdr.args[0] = st.args[1];
		s->hdr.args[1] = (__u64)-1;
		break;
	case SC_FCHMOD:
		s->hdr.args[0] = st.args[1];
		s->hdr.args[1] = st.args[0];
		break;
	case SC_FCHMODAT:
	case SC_FCHMODAT2:
		s->hdr.args[0] = st.args[2];
		s->hdr.args[1] = (__u64)-1;
		break;
	case SC_CHOWN:
	case SC_LCHOWN:
		s->hdr.args[0] = st.args[1];
		s->hdr.args[1] = st.args[2];
		s->hdr.args[2] = (__u64)-1;
		break;
	case SC_FCHOWN:
		s->hdr.args[0] = st.args[1];
		s->hdr.args[1] = st.args[2];
		s->hdr.args[2] = st.args[0];
		break;
	case SC_FCHOWNAT:
		s->hdr.args[0] = st.args[2];
		s->hdr.args[1] = st.args[3];
		s->hdr.args[2] = (__u64)-1;
		s->hdr.args[3] = st.args[4];
		break;
	}
	if (p) {
		char c = 0;
		bpf_probe_read_user(&c, 1, p);
		if (c != '/')
			off = put_cwd(s, off);
	}
	submit(s, off);
	return 0;
}

SYS_ENTER(unlink) { unsigned long a[6] = ARGS(ctx); return enter_one(SC_UNLINK, (void *)a[0], a, 0); }
SYS_EXIT(unlink) { return exit_one(SC_UNLINK, EV_UNLINK, ctx->ret, 0, -1); }
SYS_ENTER(unlinkat) { unsigned long a[6] = ARGS(ctx); return enter_one(SC_UNLINKAT, (void *)a[1], a, 0); }
SYS_EXIT(unlinkat) { return exit_one(SC_UNLINKAT, EV_UNLINK, ctx->ret, 1, -1); }
SYS_ENTER(rmdir) { unsigned long a[6] = ARGS(ctx); return enter_one(SC_RMDIR, (void *)a[0], a, 0); }
SYS_EXIT(rmdir) { return exit_one(SC_RMDIR, EV_UNLINK, ctx->ret, 0, -1); }

/* chmod and chown are rare and security-relevant everywhere (setuid bits):
 * all are sent. */
STASH_ALL(chmod, SC_CHMOD)
SYS_EXIT(chmod) { return exit_one(SC_CHMOD, EV_CHMOD, ctx->ret, 0, -1); }
STASH_ALL(fchmod, SC_FCHMOD)
SYS_EXIT(fchmod) { return exit_one(SC_FCHMOD, EV_CHMOD, ctx->ret, -1, 0); }
STASH_ALL(fchmodat, SC_FCHMODAT)
SYS_EXIT(fchmodat) { return exit_one(SC_FCHMODAT, EV_CHMOD, ctx->ret, 1, -1); }
STASH_ALL(fchmodat2, SC_FCHMODAT2)
SYS_EXIT(fchmodat2) { return exit_one(SC_FCHMODAT2, EV_CHMOD, ctx->ret, 1, -1); }
STASH_ALL(chown, SC_CHOWN)
SYS_EXIT(chown) { return exit_one(SC_CHOWN, EV_CHOWN, ctx->ret, 0, -1); }
STASH_ALL(lchown, SC_LCHOWN)
SYS_EXIT(lchown) { return exit_one(SC_LCHOWN, EV_CHOWN, ctx->ret, 0, -1); }
STASH_ALL(fchown, SC_FCHOWN)
SYS_EXIT(fchown) { return exit_one(SC_FCHOWN, EV_CHOWN, ctx->ret, -1, 0); }
STASH_ALL(fchownat, SC_FCHOWNAT)
SYS_EXIT(fchownat) { return exit_one(SC_FCHOWNAT, EV_CHOWN, ctx->ret, 1, -1); }
