/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Entry/exit pairing for syscall tracepoints: the entry stashes the raw
 * arguments under (tid, family); the exit takes them back with the result,
 * so failed attempts are reported too.
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

/* STASH_ALL: an entry that stashes unconditionally. */
/*
 * ARGS copies the syscall arguments out of the context. A probe read, not a
 * direct load: the kernel refuses to attach a program whose direct context
 * loads reach past the syscall's own arguments (EACCES), and this copy is
 * shared by syscalls of every arity. Unused slots hold whatever follows.
 */
#define ARGS(ctx) {0}; bpf_probe_read_kernel(a, sizeof(a), (void *)(ctx) + __builtin_offsetof(struct trace_event_raw_sys_enter, args))

/* STASH_ALL: an entry that stashes unconditionally. */
#define STASH_ALL(name, fam)                                   \
	SYS_ENTER(name)                                        \
	{                                                      \
		if (should_trace()) {                          \
			unsigned long a[6] = ARGS(ctx);        \
			stash_put(fam, a);                     \
		}                                              \
		return 0;                                      \
	}

static __always_inline int is_socket_file(struct file *f)
{
	if (!f)
		return 0;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & 00170000) == 0140000;
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

#endif
