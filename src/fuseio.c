/*
 * fuseio - see fuseio.h.  The hooks see every message: a request (read)
 * starts with struct fuse_in_header, a reply (writev) with struct
 * fuse_out_header in its first iovec and the reply's body after it.
 */
#include "dssfs/fuseio.h"

#include <errno.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static struct {
	void (*on_end)(void *);
	void *arg;
	atomic_flag ended;
	/* the INIT request's id, once read, if the kernel offered
	 * FUSE_PARALLEL_DIROPS; 0 otherwise (no request has id 0) */
	_Atomic uint64_t init_unique;
} io = { .ended = ATOMIC_FLAG_INIT };

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n;

	(void)userdata;
	n = read(fd, buf, len);
	if (n < 0 && errno == ENODEV) {
		int saved_errno = errno;

		if (!atomic_flag_test_and_set(&io.ended) && io.on_end)
			io.on_end(io.arg);
		errno = saved_errno;
		return n;
	}
	if (n >= (ssize_t)(sizeof(struct fuse_in_header) + offsetof(struct fuse_init_in, flags) +
			   sizeof(uint32_t))) {
		const struct fuse_in_header *in = buf;
		const struct fuse_init_in *init = (const void *)(in + 1);

		if (in->opcode == FUSE_INIT && (init->flags & FUSE_PARALLEL_DIROPS))
			atomic_store(&io.init_unique, in->unique);
	}
	return n;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	uint64_t init = atomic_load(&io.init_unique);

	(void)userdata;
	if (init && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
		const struct fuse_out_header *out = iov[0].iov_base;

		if (out->unique == init && out->error == 0) {
			struct fuse_init_out *reply = iov[1].iov_base;

			reply->flags |= FUSE_PARALLEL_DIROPS;
			atomic_store(&io.init_unique, 0);
		}
	}
	return writev(fd, iov, count);
}

int fuseio_attach(struct fuse_session *se, void (*on_end)(void *arg), void *arg)
{
	static const struct fuse_custom_io hooks = {
		.read = io_read,
		.writev = io_writev,
	};

	io.on_end = on_end;
	io.arg = arg;
	return fuse_session_custom_io(se, &hooks, fuse_session_fd(se));
}
