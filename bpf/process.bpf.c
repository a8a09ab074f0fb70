// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Process lifecycle: exec, fork, exit, and cgroup creation/removal (the
 * sensor's view of container start and stop). BTF tracepoints give typed
 * access to task_struct and linux_binprm.
 *
 * EV_EXEC   args: 0 inode, 1 dev, 2 mode, 3 mtime ns, 4 ctime ns, 5 nlink,
 *                 6 old pid, 7 superblock magic; flags: F_STDIO_INET
 *           strs: 0 exe path (walk), 1 filename, 2 interp, 3 argv (NUL-separated),
 *                 4 cwd (walk), 5 environment (NUL-separated, user space keeps
 *                 only LD_PRELOAD and LD_LIBRARY_PATH), 6 exe dentry name
 * EV_FORK   args: 0 child tgid, 1 child tid, 2 child start ns
 * EV_EXIT   args: 0 exit_code (wait status form)
 * EV_CGROUP_MKDIR/RMDIR args: 0 cgroup id, 1 hierarchy id, 2 level; strs: 0 path
 */
#include "mamori.h"

struct inode___pre611 {
	struct timespec64 i_mtime;
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___pre66 {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

static __always_inline __u64 inode_mtime(struct inode *ino)
{
	if (bpf_core_field_exists(ino->i_mtime_sec))
		return BPF_CORE_READ(ino, i_mtime_sec) * 1000000000ULL + BPF_CORE_READ(ino, i_mtime_nsec);
	struct inode___pre611 *o = (void *)ino;
	return BPF_CORE_READ(o, i_mtime.tv_sec) * 1000000000ULL + BPF_CORE_READ(o, i_mtime.tv_nsec);
}

static __always_inline __u64 inode_ctime(struct inode *ino)
{
	/* The top bits of i_ctime_nsec carry flags (I_CTIME_QUERIED). */
	if (bpf_core_field_exists(ino->i_ctime_sec))
		return BPF_CORE_READ(ino, i_ctime_sec) * 1000000000ULL + (BPF_CORE_READ(ino, i_ctime_nsec) & 0x3fffffff);
	struct inode___pre611 *o = (void *)ino;
	if (bpf_core_field_exists(o->__i_ctime))
		return BPF_CORE_READ(o, __i_ctime.tv_sec) * 1000000000ULL + BPF_CORE_READ(o, __i_ctime.tv_nsec);
	struct inode___pre66 *p = (void *)ino;
	return BPF_CORE_READ(p, i_ctime.tv_sec) * 1000000000ULL + BPF_CORE_READ(p, i_ctime.tv_nsec);
}

#define AF_INET_  2
#define AF_INET6_ 10

/* stdio_inet reports whether fd is an inet or inet6 socket: a program
 * started with a network connection for its input or output (a shell so
 * started is a reverse or bind shell, however the socket got there: dup2,
 * or a close and a socket() that took the freed number). */
static __always_inline int stdio_inet(long fd)
{
	struct file *f = file_of_fd(fd);
	if (!is_socket_file(f))
		return 0;
	struct socket *sock = (struct socket *)BPF_CORE_READ(f, private_data);
	__u16 fam = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
	return fam == AF_INET_ || fam == AF_INET6_;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	if (!should_trace())
		return 0;
	struct scratch *s = begin_event(EV_EXEC);
	if (!s)
		return 0;
	struct file *f = BPF_CORE_READ(bprm, file);
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	s->hdr.args[0] = BPF_CORE_READ(ino, i_ino);
	s->hdr.args[1] = BPF_CORE_READ(ino, i_sb, s_dev);
	s->hdr.args[2] = BPF_CORE_READ(ino, i_mode);
	s->hdr.args[3] = inode_mtime(ino);
	s->hdr.args[4] = inode_ctime(ino);
	s->hdr.args[5] = BPF_CORE_READ(ino, i_nlink);
	s->hdr.args[6] = old_pid;
	s->hdr.args[7] = BPF_CORE_READ(ino, i_sb, s_magic);
	if (stdio_inet(0) || stdio_inet(1))
		s->hdr.flags |= F_STDIO_INET;

	struct path p;
	bpf_probe_read_kernel(&p, sizeof(p), &f->f_path);
	__u32 off = put_path(s, 0, &p);
	off = put_kernel_str(s, off, BPF_CORE_READ(bprm, filename), STR_MAX);
	off = put_kernel_str(s, off, BPF_CORE_READ(bprm, interp), STR_MAX);

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long as = BPF_CORE_READ(mm, arg_start), ae = BPF_CORE_READ(mm, arg_end);
	off = put_user_bytes(s, off, (void *)as, ae - as, STR_MAX - 1);

	struct path pwd;
	bpf_probe_read_kernel(&pwd, sizeof(pwd), &task->fs->pwd);
	off = put_path(s, off, &pwd);

	unsigned long es = BPF_CORE_READ(mm, env_start), ee = BPF_CORE_READ(mm, env_end);
	off = put_user_bytes(s, off, (void *)es, ee - es, STR_MAX - 1);
	off = put_kernel_str(s, off, BPF_CORE_READ(f, f_path.dentry, d_name.name), NAME_MAX_B);
	submit(s, off);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	/* Threads share the process; only new processes are reported. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	if (!should_trace())
		return 0;
	struct scratch *s = begin_event(EV_FORK);
	if (!s)
		return 0;
	s->hdr.args[0] = BPF_CORE_READ(child, tgid);
	s->hdr.args[1] = BPF_CORE_READ(child, pid);
	s->hdr.args[2] = BPF_CORE_READ(child, start_boottime);
	submit(s, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* Report the process once, when its last thread leaves. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (!should_trace())
		return 0;
	struct scratch *s = begin_event(EV_EXIT);
	if (!s)
		return 0;
	s->hdr.args[0] = BPF_CORE_READ(task, exit_code);
	submit(s, 0);
	return 0;
}

static __always_inline int on_cgroup(struct trace_event_raw_cgroup *ctx, __u32 kind)
{
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.args[0] = ctx->id;
	s->hdr.args[1] = ctx->root;
	s->hdr.args[2] = ctx->level;
	__u32 loc = ctx->__data_loc_path;
	__u32 off = put_kernel_str(s, 0, (void *)ctx + (loc & 0xffff), STR_MAX);
	submit(s, off);
	return 0;
}

SEC("tracepoint/cgroup/cgroup_mkdir")
int on_cgroup_mkdir(struct trace_event_raw_cgroup *ctx)
{
	return on_cgroup(ctx, EV_CGROUP_MKDIR);
}

SEC("tracepoint/cgroup/cgroup_rmdir")
int on_cgroup_rmdir(struct trace_event_raw_cgroup *ctx)
{
	return on_cgroup(ctx, EV_CGROUP_RMDIR);
}
