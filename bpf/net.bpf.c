// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Network syscalls: socket, connect, bind, listen, accept, and dup2/dup3 of
 * a socket onto a standard stream (the reverse-shell tell).
 *
 * EV_SOCKET  args: 0 family, 1 type, 2 protocol; ret = fd
 * EV_CONNECT, EV_BIND
 *            args: 0 fd, 1 addrlen, 2 family, 3 type (of the socket at exit);
 *                  a unix connect that succeeded: 4 inode, 5 device of the
 *                  socket file it reached (whatever name the caller used)
 *            strs: 0 raw sockaddr as passed (up to 128 bytes)
 * EV_LISTEN  args: 0 fd, 1 backlog, 2 family, 3 type, 4 local port, 5 remote port
 *            strs: 0 local address (16) + remote address (16)
 * EV_ACCEPT  args: 0 listening fd, 1 flags, 2 family, 3 type, 4 local port,
 *                  5 remote port; ret = new fd; strs as EV_LISTEN
 * EV_DUP     args: 0 oldfd, 1 newfd, 2 family, 3 type, 4 local port,
 *                  5 remote port; strs as EV_LISTEN. Sent only when the new fd
 *                  is 0, 1 or 2 and is a socket after the call.
 */
#include "syscall.h"

SYS_EXIT(socket)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	struct scratch *s = begin_event(EV_SOCKET);
	if (!s)
		return 0;
	s->hdr.ret = sys_ret(ctx);
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = st.args[1];
	s->hdr.args[2] = st.args[2];
	submit(s, 0);
	return 0;
}

static __always_inline int exit_addr(struct trace_event_raw_sys_exit *ctx, __u32 kind, long ret)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	s->hdr.args[0] = st.args[0];
	s->hdr.args[1] = st.args[2];
	struct file *f = file_of_fd(st.args[0]);
	if (is_socket_file(f)) {
		struct socket *sock = BPF_CORE_READ(f, private_data);
		s->hdr.args[2] = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
		s->hdr.args[3] = BPF_CORE_READ(sock, type);
		if (kind == EV_CONNECT && ret == 0 && s->hdr.args[2] == 1 /* AF_UNIX */) {
			/* The peer carries the listener's path (a stream connect's
			 * new socket copies it): the file reached, not the name. */
			struct unix_sock *u = (struct unix_sock *)BPF_CORE_READ(sock, sk);
			struct unix_sock *peer = (struct unix_sock *)BPF_CORE_READ(u, peer);
			struct inode *pi = BPF_CORE_READ(peer, path.dentry, d_inode);
			s->hdr.args[4] = BPF_CORE_READ(pi, i_ino);
			s->hdr.args[5] = BPF_CORE_READ(pi, i_sb, s_dev);
		}
	}
	__u32 off = put_user_bytes(s, 0, (void *)st.args[1], st.args[2], 128);
	submit(s, off);
	return 0;
}

SYS_EXIT(connect) { return exit_addr(ctx, EV_CONNECT, sys_ret(ctx)); }
SYS_EXIT(bind) { return exit_addr(ctx, EV_BIND, sys_ret(ctx)); }

static __always_inline int emit_sock(__u32 kind, long ret, __u64 a0, __u64 a1, long fd)
{
	struct scratch *s = begin_event(kind);
	if (!s)
		return 0;
	s->hdr.ret = ret;
	s->hdr.args[0] = a0;
	s->hdr.args[1] = a1;
	struct file *f = file_of_fd(fd);
	__u32 off = 0;
	if (is_socket_file(f))
		off = put_sock(s, 0, f, 2);
	else
		off = put_empty(s, 0);
	submit(s, off);
	return 0;
}

SYS_EXIT(listen)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	return emit_sock(EV_LISTEN, sys_ret(ctx), st.args[0], st.args[1], st.args[0]);
}

SYS_EXIT(accept)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	return emit_sock(EV_ACCEPT, sys_ret(ctx), st.args[0], 0, sys_ret(ctx));
}

SYS_EXIT(accept4)
{
	struct stash st;
	if (exit_take(ctx, &st))
		return 0;
	return emit_sock(EV_ACCEPT, sys_ret(ctx), st.args[0], st.args[3], sys_ret(ctx));
}

/* dup onto stdio is rare; only that case is looked at. */
static __always_inline int exit_dup(struct trace_event_raw_sys_exit *ctx, long ret)
{
	struct stash st;
	if (ret < 0 || exit_take(ctx, &st) || st.args[1] > 2)
		return 0;
	struct file *f = file_of_fd(st.args[1]);
	if (!is_socket_file(f))
		return 0;
	return emit_sock(EV_DUP, ret, st.args[0], st.args[1], st.args[1]);
}

SYS_EXIT(dup2) { return exit_dup(ctx, sys_ret(ctx)); }
SYS_EXIT(dup3) { return exit_dup(ctx, sys_ret(ctx)); }
