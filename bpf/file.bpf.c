// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * File operations: open, rename, link, symlink, unlink, chmod, chown.
 *
 * Opens are the hottest syscall on most hosts, so they are filtered in the
 * kernel: an absolute path is looked up in the watch_paths LPM trie (longest
 * prefix wins, its value says whether reads, writes or both matter). An
 * open under a root no entry starts with (/tmp, /proc, ...) costs a
 * two-byte read; one that no entry watches a string read and one lookup.
 * Relative paths with write intent are always sent (user space resolves
 * them against their directory fd or the cwd, and filters). A successful
 * read the path did not select is checked once more by the inode it opened
 * (watch_inodes). Every operation has one hook, at syscall exit (exit_take
 * in syscall.h).
 *
 * EV_OPEN    args: 0 flags, 1 mode, 2 dfd (open_by_handle_at: its mount fd); ret = fd or -errno
 *            strs: 0 resolved path (walk of the new fd; empty on failure),
 *                  1 path as passed, 2 base when the path is relative
 *                  (the walk of openat's dfd, or the cwd)
 * EV_RENAME, EV_LINK, EV_SYMLINK
 *            args: 0 flags; strs: 0 old, 1 new, and when either is relative
 *            2 old's base, 3 new's base (directory fd or cwd; empty if absolute)
 * EV_UNLINK  args: 0 flags (AT_REMOVEDIR for rmdir); strs: 0 path, 1 base if relative
 * EV_CHMOD   args: 0 mode, 1 fd (-1 when by path); strs: 0 path or fd walk, 1 base if relative
 * EV_CHOWN   args: 0 uid, 1 gid, 2 fd (-1 when by path), 3 flags; strs as EV_CHMOD
 */
#include "syscall.h"

#define PATH_KEY_MAX 128
#define WATCH_WRITE 1
#define WATCH_READ 2
/* 4: the caller decides (watch_bits). 8: a directory holding a secret
 * below it, an exact entry user space adds (learn_link). */
#define WATCH_SECRET_DIR 8

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

/* path_of gives a scan step its path: the one it was handed, or without
 * bpf_loop (a global step, handed numbers only) the CPU's path key, the
 * only path the scans read. */
static __always_inline const char *path_of(const char *p)
{
#ifdef MAMORI_COMPAT
	__u32 zero = 0;
	struct path_key *k = bpf_map_lookup_elem(&key_scratch, &zero);
	return k ? k->data : NULL;
#else
	return p;
#endif
}

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

/* dot_segment reports whether the first len bytes of p hold "//", or a
 * "." or ".." segment: a path that is not in canonical form. It runs under
 * MAMORI_LOOP (bpf_loop) so the verifier checks one step, not every
 * position in every program that inlines watch_bits. */
struct dot_ctx {
	const char *p;
	long len;
	int found;
};

static long dot_step(__u64 i, struct dot_ctx *c)
{
	if ((long)i >= c->len)
		return 1;
	const char *p = path_of(c->p);
	if (!p)
		return 1;
	if (p[i & (PATH_KEY_MAX - 1)] != '/')
		return 0;
	char a = (long)i + 1 < c->len ? p[(i + 1) & (PATH_KEY_MAX - 1)] : 0;
	char b = (long)i + 2 < c->len ? p[(i + 2) & (PATH_KEY_MAX - 1)] : 0;
	char d = (long)i + 3 < c->len ? p[(i + 3) & (PATH_KEY_MAX - 1)] : 0;
	if (a == '/' || (a == '.' && (b == 0 || b == '/')) || (a == '.' && b == '.' && (d == 0 || d == '/'))) {
		c->found = 1;
		return 1;
	}
	return 0;
}
MAMORI_COMPAT_STEP(dot_step, struct dot_ctx)

/* maybe_dot_segment is dot_segment's quick filter, eight bytes at a time:
 * whether a '/' is followed by '/' or '.' anywhere in the first len bytes
 * (hidden files pass too; dot_segment then decides). Most paths have no
 * such pair and skip the byte-wise loop. */
#define BYTE_ONES 0x0101010101010101ULL
#define BYTE_HIGHS 0x8080808080808080ULL

/* bytes_eq sets the high bit of each byte of v equal to c, exactly. */
static __always_inline __u64 bytes_eq(__u64 v, __u8 c)
{
	__u64 t = v ^ (BYTE_ONES * c);
	return ~(((t & ~BYTE_HIGHS) + ~BYTE_HIGHS) | t) & BYTE_HIGHS;
}

static __always_inline int maybe_dot_segment(const char *p, long len)
{
	__u64 cur, next;
	__builtin_memcpy(&cur, p, 8);
#pragma unroll
	for (int w = 0; w < PATH_KEY_MAX / 8; w++) {
		if (w * 8 >= len)
			break;
		next = 0;
		if (w + 1 < PATH_KEY_MAX / 8)
			__builtin_memcpy(&next, p + (w + 1) * 8, 8);
		__u64 after = (cur >> 8) | (next << 56); /* the byte after each */
		if (bytes_eq(cur, '/') & (bytes_eq(after, '/') | bytes_eq(after, '.')))
			return 1;
		cur = next;
	}
	return 0;
}

static __always_inline int dot_segment(const char *p, long len)
{
	struct dot_ctx c = {.p = p, .len = len};
	MAMORI_LOOP(PATH_KEY_MAX, dot_step, &c);
	return c.found;
}

/* proc_root reports whether p, a path under /proc, names a file through a
 * process's root directory: "/proc/PID/root/etc/shadow",
 * "/proc/self/task/TID/root/...". The trie cannot hold the pid; user space
 * judges such a path by the file it reaches. Only /proc paths pay for the
 * scan, under MAMORI_LOOP like dot_segment. */
struct root_ctx {
	const char *p;
	long len;
	int found;
};

static long root_step(__u64 i, struct root_ctx *c)
{
	if ((long)i + 6 > c->len)
		return 1;
	const char *p = path_of(c->p);
	if (!p)
		return 1;
	if (p[i & (PATH_KEY_MAX - 1)] == '/' && p[(i + 1) & (PATH_KEY_MAX - 1)] == 'r' &&
	    p[(i + 2) & (PATH_KEY_MAX - 1)] == 'o' && p[(i + 3) & (PATH_KEY_MAX - 1)] == 'o' &&
	    p[(i + 4) & (PATH_KEY_MAX - 1)] == 't' && p[(i + 5) & (PATH_KEY_MAX - 1)] == '/') {
		c->found = 1;
		return 1;
	}
	return 0;
}
MAMORI_COMPAT_STEP(root_step, struct root_ctx)

static __always_inline int proc_root(const char *p, long len)
{
	if (len < 13 || p[1] != 'p' || p[2] != 'r' || p[3] != 'o' || p[4] != 'c' || p[5] != '/')
		return 0;
	struct root_ctx c = {.p = p, .len = len};
	MAMORI_LOOP(PATH_KEY_MAX, root_step, &c);
	return c.found;
}

/* Cgroups in which a link to a secret was made under a relative name
 * ("cd /tmp; ln -s /etc/shadow s; cat s"): the trie cannot hold a path it
 * does not know, so that cgroup's relative reads are sent from then on and
 * judged by the file they reach. relative_links_any spares every other
 * relative open the hash lookup until the first such link. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} relative_links SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} relative_links_any SEC(".maps");

/* relative_bits is what a relative path gets: the caller decides, and
 * reads are sent in a cgroup that made a relative link to a secret. */
static __always_inline __u32 relative_bits(void)
{
	__u32 zero = 0;
	__u32 *any = bpf_map_lookup_elem(&relative_links_any, &zero);
	if (!any || !*any)
		return 4 | WATCH_WRITE;
	__u64 cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&relative_links, &cg) ? 4 | WATCH_WRITE | WATCH_READ : 4 | WATCH_WRITE;
}

/* watch_bits returns what the watch list says about a user path. Bit 4
 * says user space decides: relative paths (WATCH_WRITE, and WATCH_READ in a
 * cgroup relative_bits names) and non-canonical ones (both). */
static __always_inline __u32 watch_bits(const char *upath)
{
	/* Two bytes settle most calls (a relative path, or a root nobody
	 * watches such as /tmp) before the whole path is copied. A failed read
	 * (a short string at the end of a page) takes the long way. */
	char head[2];
	if (bpf_probe_read_user(head, sizeof(head), upath) == 0) {
		if (head[0] == 0)
			return 0;
		if (head[0] != '/')
			return relative_bits();
		/* "//etc/shadow", "/./etc/shadow": not what the trie holds, and
		 * rare; user space cleans and judges them. */
		if (head[1] == '/' || head[1] == '.')
			return 4 | WATCH_WRITE | WATCH_READ;
		if (!root_watched((unsigned char)head[1]))
			return 0;
	}
	__u32 zero = 0;
	struct path_key *k = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->data, PATH_KEY_MAX, upath);
	if (n <= 1)
		return 0;
	if (k->data[0] != '/')
		return relative_bits();
	if (!root_watched((unsigned char)k->data[1]))
		return 0;
	/* The NUL too: a prefix rule still matches, and a learned link
	 * (learn_link), stored with its NUL, matches only itself. */
	k->prefixlen = n * 8;
	__u32 *v = bpf_map_lookup_elem(&watch_paths, k);
	__u32 bits = v ? *v : 0;
	/* "/etc//shadow", "/etc/./shadow", "/var/../etc/shadow" name watched
	 * files the trie does not see as such: user space cleans and judges
	 * them. Only paths under a watched root that are not already sent for
	 * both reach the scan. */
	if ((bits & (WATCH_WRITE | WATCH_READ)) != (WATCH_WRITE | WATCH_READ) &&
	    ((maybe_dot_segment(k->data, n - 1) && dot_segment(k->data, n - 1)) || proc_root(k->data, n - 1)))
		return 4 | WATCH_WRITE | WATCH_READ;
	return bits;
}

#define O_ACCMODE 3
#define O_CREAT 0100
#define O_TRUNC 01000
/* include/linux/fs.h: the same bit from 4.19 (its introduction) on. */
#define FMODE_CREATED_ 0x100000

static __always_inline int open_writes(__u64 flags)
{
	return (flags & O_ACCMODE) != 0 || (flags & (O_CREAT | O_TRUNC));
}

static __always_inline int open_interesting(const char *upath, __u64 flags)
{
	__u32 bits = watch_bits(upath);
	if (open_writes(flags))
		return bits & WATCH_WRITE;
	return bits & WATCH_READ;
}

/*
 * Reads judged by the file opened, not the path given. A secret read
 * through a path the trie cannot name — a link with a relative target, one
 * made before the agent started or renamed since, a hard link, a bind
 * mount, a ".." climb from an unwatched root — still opens the secret's
 * inode. User space keeps the identities (device and inode number) of the
 * read-watched files, on the host and in each container's root, in
 * watch_inodes, and a bit per inode number's hash in watch_ino_bits: an
 * unwatched read pays a few loads and one array load; only a bit hit
 * (a watched number, or another file with a number hashing alike) pays
 * for the device and the hash lookup.
 */
#define INO_BITS_WORDS 1024 /* 65,536 bits */

struct ino_bits {
	__u64 any; /* zero: no inode is watched, skip the check */
	__u64 w[INO_BITS_WORDS];
};

struct ino_key {
	__u64 ino;
	__u32 dev; /* the superblock's s_dev: MAJOR << 20 | MINOR */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ino_bits);
} watch_ino_bits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ino_key);
	__type(value, __u32);
} watch_inodes SEC(".maps");

#ifndef MAMORI_COMPAT
/* Linux 6.2+: a cast the verifier turns into nothing, after which fields
 * are plain (fault-checked) loads. Weak: on older kernels the loader makes
 * the symbol's address zero and the verifier drops the branch. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#endif

/* opened_file returns the current task's file for fd, or NULL. It runs on
 * every read the path filter let pass, so the default build uses plain
 * loads down to the fd array: one helper read instead of five. */
static __always_inline struct file *opened_file(long fd)
{
	if (fd < 0)
		return NULL;
#ifndef MAMORI_COMPAT
	struct file *f = NULL;
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = t->files->fdt;
	if (!fdt || (unsigned long)fd >= fdt->max_fds)
		return NULL;
	struct file **fds = fdt->fd;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
#else
	return file_of_fd(fd);
#endif
}

static __always_inline int ino_bit_set(struct ino_bits *b, __u64 ino)
{
	/* The same hash as user space's (sensor.inoBit). */
	__u32 h = (__u32)((ino * 0x9E3779B97F4A7C15ULL) >> 48);
	return (b->w[(h >> 6) & (INO_BITS_WORDS - 1)] >> (h & 63)) & 1;
}

static __always_inline int ino_watched(long fd)
{
	__u32 zero = 0;
	struct ino_bits *b = bpf_map_lookup_elem(&watch_ino_bits, &zero);
	if (!b || !b->any)
		return 0;
	struct file *f = opened_file(fd);
	if (!f)
		return 0;
	struct ino_key k = {};
#ifndef MAMORI_COMPAT
	if (bpf_rdonly_cast) {
		struct file *bf = bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
		struct inode *in = bf->f_inode;
		k.ino = in->i_ino;
		if (!k.ino || !ino_bit_set(b, k.ino))
			return 0;
		k.dev = in->i_sb->s_dev;
		return bpf_map_lookup_elem(&watch_inodes, &k) != NULL;
	}
#endif
	struct inode *in = BPF_CORE_READ(f, f_inode);
	k.ino = BPF_CORE_READ(in, i_ino);
	if (!k.ino || !ino_bit_set(b, k.ino))
		return 0;
	k.dev = BPF_CORE_READ(in, i_sb, s_dev);
	return bpf_map_lookup_elem(&watch_inodes, &k) != NULL;
}

/* begin_open starts an EV_OPEN for a call's result, flagged when it is
 * sent for the file it opened. */
static __always_inline struct scratch *begin_open(long ret, int by_inode)
{
	struct scratch *s = begin_event(EV_OPEN);
	if (!s)
		return NULL;
	if (by_inode)
		s->hdr.flags |= F_BY_INODE;
	s->hdr.ret = ret;
	return s;
}

/* exit_open_common emits one EV_OPEN; pi is the index of the path arg. */
static __always_inline int exit_open_common(struct trace_event_raw_sys_exit *ctx, __u32 fam, long ret, int pi)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	const char *up = (const char *)st.args[pi & 3];
	__u64 flags = st.args[(pi + 1) & 3];
	if (fam == SC_CREAT)
		flags = 01 | O_CREAT | O_TRUNC;
	if (fam == SC_OPENAT2)
		bpf_probe_read_user(&flags, sizeof(flags), (void *)st.args[2]);
	/* Every successful read is checked (a path the filter did send may be
	 * a hard link: its walk names the link, the flag says what it is). */
	int by_inode = ret >= 0 && !open_writes(flags) && ino_watched(ret);
	if (!by_inode && !open_interesting(up, flags))
		return 0;
	struct scratch *s = begin_open(ret, by_inode);
	if (!s)
		return 0;
	/* Whether O_CREAT made the file: truncating a file just made destroys
	 * nothing (a log's first write, a shell's first history save). */
	if (ret >= 0 && (flags & O_CREAT)) {
		struct file *f = opened_file(ret);
		if (f && (BPF_CORE_READ(f, f_mode) & FMODE_CREATED_))
			s->hdr.flags |= F_CREATED;
	}
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
		off = put_base(s, off, (fam == SC_OPENAT || fam == SC_OPENAT2) ? (long)st.args[0] : -100);
	submit(s, off);
	return 0;
}

/* open_by_handle_at(mount_fd, handle, flags) opens a file with no path at
 * all: the "shocker" read of the host's /etc/shadow from a container with
 * CAP_DAC_READ_SEARCH. The call is rare, so every attempt is sent, named by
 * the file it opened and flagged when that is a read-watched one. */
SYS_EXIT(open_by_handle_at)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	long ret = sys_ret(ctx);
	struct scratch *s = begin_open(ret, ret >= 0 && !open_writes(st.args[2]) && ino_watched(ret));
	if (!s)
		return 0;
	s->hdr.args[0] = st.args[2];
	s->hdr.args[2] = st.args[0];
	__u32 off = ret >= 0 ? put_fd_path(s, 0, ret) : put_empty(s, 0);
	off = put_empty(s, off);
	submit(s, off);
	return 0;
}

SYS_EXIT(openat) { return exit_open_common(ctx, SC_OPENAT, sys_ret(ctx), 1); }
SYS_EXIT(open) { return exit_open_common(ctx, SC_OPEN, sys_ret(ctx), 0); }
SYS_EXIT(creat) { return exit_open_common(ctx, SC_CREAT, sys_ret(ctx), 0); }
SYS_EXIT(openat2) { return exit_open_common(ctx, SC_OPENAT2, sys_ret(ctx), 1); }

/* Links learn_link added to the watch (0) and could not add (1: the trie
 * is full): user space reports both, so a blind spot is never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} links_learned SEC(".maps");

/* learn_link makes a new link to a watched secret a watched path itself,
 * here in the kernel so the very next open through it is seen (user space
 * would learn it too late for "ln -s /etc/shadow x && cat x"). A symlink
 * whose absolute target, or a hard link whose old name, the watch list
 * reads as a secret, or a symlink to a directory with a secret below it
 * ("ln -s /etc x && cat x/shadow"), puts two entries in the trie: the
 * link's path with its NUL, which reads as the secret (or, for a
 * directory, is one in turn, so a link to the link is learned too), and
 * the link's path and a '/' as a prefix, so every open under it is sent —
 * the target may be a directory inside a read-watched one
 * (/run/secrets/kubernetes.io/serviceaccount). The link's first character
 * joins the roots. An open through it is named by the file it reached. It
 * returns whether it learned. */
static __always_inline int learn_link(const char *target, const char *link)
{
	__u32 bits = watch_bits(target);
	if (bits & 4)
		return 0;
	__u32 secret = bits & WATCH_READ;
	__u32 dir = bits & WATCH_SECRET_DIR;
	if (!secret && !dir)
		return 0;
	__u32 zero = 0;
	struct path_key *k = bpf_map_lookup_elem(&key_scratch, &zero);
	if (!k)
		return 0;
	long n = bpf_probe_read_user_str(k->data, PATH_KEY_MAX, link);
	if (n <= 1)
		return 0;
	if (k->data[0] != '/') {
		__u64 cg = bpf_get_current_cgroup_id();
		__u32 one = 1;
		__u32 *any = bpf_map_lookup_elem(&relative_links_any, &zero);
		if (bpf_map_update_elem(&relative_links, &cg, &one, BPF_ANY) || !any) {
			count(&links_learned, 1);
			return 0;
		}
		*any = 1;
		count(&links_learned, 0);
		return 1;
	}
	if (n <= 2)
		return 0;
	k->prefixlen = n * 8;
	__u32 v = dir | (secret ? WATCH_READ | WATCH_WRITE : 0);
	if (bpf_map_update_elem(&watch_paths, k, &v, BPF_ANY)) {
		count(&links_learned, 1);
		return 0;
	}
	/* A name cut at the key's size keeps its 127 bytes as the prefix: it
	 * sends a little more, never less. */
	if (n < PATH_KEY_MAX) {
		k->data[(n - 1) & (PATH_KEY_MAX - 1)] = '/';
	} else {
		k->prefixlen = (PATH_KEY_MAX - 1) * 8;
	}
	v = WATCH_READ | WATCH_WRITE;
	if (bpf_map_update_elem(&watch_paths, k, &v, BPF_ANY)) {
		count(&links_learned, 1);
		return 0;
	}
	count(&links_learned, 0);
	struct roots *r = bpf_map_lookup_elem(&watch_roots, &zero);
	if (r) {
		unsigned char c = k->data[1];
		__u64 bit = 1ULL << (c & 63);
#ifndef MAMORI_COMPAT
		__sync_fetch_and_or(&r->bits[(c >> 6) & 3], bit);
#else
		/* Linux 5.10 has no atomic OR (5.12). A plain one loses a bit
		 * only to another CPU learning a link under another new root
		 * of the same word in the same instant. */
		r->bits[(c >> 6) & 3] |= bit;
#endif
	}
	return 1;
}

/* Two-path operations: a rename or link touching a watched path (or a
 * relative one) is sent; a symlink when the link itself lands on one, or
 * when it or a hard link was learned as a path to a secret. */
static __always_inline int exit_two(struct trace_event_raw_sys_exit *ctx, __u32 fam, __u32 kind, long ret, int ai, int bi)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	const char *a = (const char *)st.args[ai];
	const char *b = (const char *)st.args[bi];
	/* a symlink's target is free text: only where the link lands counts,
	 * unless the link now names a secret */
	int symlink = fam == SC_SYMLINK || fam == SC_SYMLINKAT;
	int linking = symlink || fam == SC_LINK || fam == SC_LINKAT;
	int learned = linking && ret == 0 && learn_link(a, b);
	if (!learned && !(watch_bits(b) & WATCH_WRITE) && (symlink || !(watch_bits(a) & WATCH_WRITE)))
		return 0;
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	if (fam == SC_RENAMEAT2 || fam == SC_LINKAT)
		s->hdr.args[0] = st.args[4];
	__u32 off = put_user_str(s, 0, a);
	off = put_user_str(s, off, b);
	char ca = 0, cb = 0;
	bpf_probe_read_user(&ca, 1, a);
	bpf_probe_read_user(&cb, 1, b);
	if (ca != '/' || cb != '/') {
		/* each relative path's own base: rm -r and mv work through
		 * directory fds (renameat(olddirfd, old, newdirfd, new)) */
		long da = -100, db = -100;
		if (fam == SC_RENAMEAT || fam == SC_RENAMEAT2 || fam == SC_LINKAT) {
			da = st.args[0];
			db = st.args[2];
		} else if (fam == SC_SYMLINKAT) {
			db = st.args[1];
		}
		off = (ca != '/' && !symlink) ? put_base(s, off, da) : put_empty(s, off);
		off = cb != '/' ? put_base(s, off, db) : put_empty(s, off);
	}
	submit(s, off);
	return 0;
}

SYS_EXIT(rename) { return exit_two(ctx, SC_RENAME, EV_RENAME, sys_ret(ctx), 0, 1); }
SYS_EXIT(renameat) { return exit_two(ctx, SC_RENAMEAT, EV_RENAME, sys_ret(ctx), 1, 3); }
SYS_EXIT(renameat2) { return exit_two(ctx, SC_RENAMEAT2, EV_RENAME, sys_ret(ctx), 1, 3); }
SYS_EXIT(link) { return exit_two(ctx, SC_LINK, EV_LINK, sys_ret(ctx), 0, 1); }
SYS_EXIT(linkat) { return exit_two(ctx, SC_LINKAT, EV_LINK, sys_ret(ctx), 1, 3); }
SYS_EXIT(symlink) { return exit_two(ctx, SC_SYMLINK, EV_SYMLINK, sys_ret(ctx), 0, 1); }
SYS_EXIT(symlinkat) { return exit_two(ctx, SC_SYMLINKAT, EV_SYMLINK, sys_ret(ctx), 0, 2); }

/* exit_one reports a one-path operation; watched says the path must be
 * under a write-watched prefix (unlink, rmdir), else every call is sent. */
static __always_inline int exit_one(struct trace_event_raw_sys_exit *ctx, __u32 fam, __u32 kind, long ret, int pi, int fdi, int watched)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	if (watched && !(watch_bits((const char *)st.args[pi & 3]) & WATCH_WRITE))
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
		int at = fam == SC_UNLINKAT || fam == SC_FCHMODAT || fam == SC_FCHMODAT2 || fam == SC_FCHOWNAT;
		if (c != '/')
			off = put_base(s, off, at ? (long)st.args[0] : -100);
	}
	submit(s, off);
	return 0;
}

SYS_EXIT(unlink) { return exit_one(ctx, SC_UNLINK, EV_UNLINK, sys_ret(ctx), 0, -1, 1); }
SYS_EXIT(unlinkat) { return exit_one(ctx, SC_UNLINKAT, EV_UNLINK, sys_ret(ctx), 1, -1, 1); }
SYS_EXIT(rmdir) { return exit_one(ctx, SC_RMDIR, EV_UNLINK, sys_ret(ctx), 0, -1, 1); }

/* chmod and chown are rare and security-relevant everywhere (setuid bits):
 * all are sent. */
SYS_EXIT(chmod) { return exit_one(ctx, SC_CHMOD, EV_CHMOD, sys_ret(ctx), 0, -1, 0); }
SYS_EXIT(fchmod) { return exit_one(ctx, SC_FCHMOD, EV_CHMOD, sys_ret(ctx), -1, 0, 0); }
SYS_EXIT(fchmodat) { return exit_one(ctx, SC_FCHMODAT, EV_CHMOD, sys_ret(ctx), 1, -1, 0); }
SYS_EXIT(fchmodat2) { return exit_one(ctx, SC_FCHMODAT2, EV_CHMOD, sys_ret(ctx), 1, -1, 0); }
SYS_EXIT(chown) { return exit_one(ctx, SC_CHOWN, EV_CHOWN, sys_ret(ctx), 0, -1, 0); }
SYS_EXIT(lchown) { return exit_one(ctx, SC_LCHOWN, EV_CHOWN, sys_ret(ctx), 0, -1, 0); }
SYS_EXIT(fchown) { return exit_one(ctx, SC_FCHOWN, EV_CHOWN, sys_ret(ctx), -1, 0, 0); }
SYS_EXIT(fchownat) { return exit_one(ctx, SC_FCHOWNAT, EV_CHOWN, sys_ret(ctx), 1, -1, 0); }
