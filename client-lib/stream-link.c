// SPDX-License-Identifier: MIT
#include "stream-link.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sync_file.h>

struct stream_link *link_new(int fd, uint32_t consumer, bool producer, unsigned buffer_count)
{
	struct stream_link *l = calloc(1, sizeof(*l));

	if (l)
		l->held = calloc(buffer_count ? buffer_count : 1, sizeof(*l->held));
	if (!l || !l->held) {
		free(l);
		close(fd);
		return NULL;
	}
	l->fd = fd;
	l->consumer = consumer;
	l->producer = producer;
	l->buffer_count = buffer_count;
	return l;
}

void link_free(struct stream_link *l)
{
	if (!l)
		return;
	if (l->fd >= 0)
		close(l->fd);
	free(l->held);
	free(l);
}

int fence_check(int fd)
{
	struct sync_file_info info = {0};

	/* Only a sync_file answers this ioctl: a memfd, a pipe or a dma-buf does not. */
	if (ioctl(fd, SYNC_IOC_FILE_INFO, &info) < 0)
		return -errno;
	return 0;
}

static void close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

int link_recv(struct stream_link *l, union db_wire_record *rec, int *ret_fence,
	      const char **ret_reason)
{
	/* One byte more than the largest record: a longer packet shows as too long, whole. */
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX + 1];
	/* Room for a few descriptors, so that a record with too many is told apart from one
	 * whose descriptors did not fit (MSG_CTRUNC: they were closed by the kernel). */
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = control.b,
		.msg_controllen = sizeof(control.b),
	};
	int fds[16];
	unsigned n_fds = 0;
	ssize_t n;
	int r;

	*ret_fence = -1;
	if (l->drained && l->in_epoll)
		return -EAGAIN;
	n = recvmsg(l->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == ECONNRESET || errno == EPIPE)) {
		/* The other end closed with records unread (killed, say): a hang-up too. */
		l->hung_up = true;
		return 0;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		l->drained = true;
		return -EAGAIN;
	}
	if (n < 0)
		return -errno;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

		for (size_t i = 0; i < k && n_fds < 16; i++)
			memcpy(&fds[n_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
	}
	if (n == 0 && n_fds == 0) {
		/* SOCK_SEQPACKET reads 0 at the end; an empty record is no record either. */
		l->hung_up = true;
		return 0;
	}
	if (mh.msg_flags & MSG_TRUNC) {
		r = -EMSGSIZE;
		*ret_reason = "a record longer than any record type";
		goto fail;
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		r = -EBADMSG;
		*ret_reason = "more descriptors than a record may carry";
		goto fail;
	}
	r = db_wire_decode(buf, (size_t)n, n_fds, rec, ret_reason);
	if (r < 0)
		goto fail;
	if (n_fds == 1 && fence_check(fds[0]) < 0) {
		r = -EBADMSG;
		*ret_reason = "a fence that is not a sync_file";
		goto fail;
	}
	r = link_check(l, rec, ret_reason);
	if (r < 0)
		goto fail;
	if (n_fds == 1)
		*ret_fence = fds[0];
	return rec->header.type;
fail:
	close_fds(fds, n_fds);
	return r;
}

int link_check(const struct stream_link *l, const union db_wire_record *rec,
	       const char **ret_reason)
{
	uint32_t index;

	if (l->producer) {
		switch (rec->header.type) {
		case DMABROKER_WIRE_HELLO:
			if (l->ready) {
				*ret_reason = "a second hello";
				return -EBADMSG;
			}
			if (rec->hello.buffer_count != l->buffer_count) {
				*ret_reason = "a hello with another buffer count than the stream's";
				return -EBADMSG;
			}
			return 0;
		case DMABROKER_WIRE_RELEASE:
			index = rec->release.index;
			if (!l->ready) {
				*ret_reason = "a release before the hello";
				return -EBADMSG;
			}
			if (index >= l->buffer_count) {
				*ret_reason = "a release of a buffer index out of range";
				return -EBADMSG;
			}
			if (l->held[index] == 0) {
				*ret_reason = "a release of a buffer the consumer does not hold";
				return -EBADMSG;
			}
			if (l->held[index] != rec->release.seq) {
				*ret_reason =
					"a release of a frame that was not sent in that buffer";
				return -EBADMSG;
			}
			return 0;
		default:
			*ret_reason = "a frame from a consumer";
			return -EBADMSG;
		}
	}
	if (rec->header.type != DMABROKER_WIRE_FRAME) {
		*ret_reason = "a record only a consumer sends, from the producer";
		return -EBADMSG;
	}
	index = rec->frame.index;
	if (rec->frame.seq <= l->last_seq) {
		*ret_reason = "a frame whose seq does not increase";
		return -EBADMSG;
	}
	if (index == DMABROKER_WIRE_NO_BUFFER)
		return 0;
	if (index >= l->buffer_count) {
		*ret_reason = "a frame of a buffer index out of range";
		return -EBADMSG;
	}
	if (l->held[index] != 0) {
		*ret_reason = "a frame in a buffer the consumer still holds";
		return -EBADMSG;
	}
	return 0;
}

void link_hold(struct stream_link *l, uint32_t index, uint64_t seq)
{
	if (index >= l->buffer_count)
		return;
	if (l->held[index] == 0)
		l->n_held++;
	l->held[index] = seq;
}

void link_unhold(struct stream_link *l, uint32_t index)
{
	if (index >= l->buffer_count || l->held[index] == 0)
		return;
	l->held[index] = 0;
	l->n_held--;
}

void link_apply(struct stream_link *l, const union db_wire_record *rec)
{
	switch (rec->header.type) {
	case DMABROKER_WIRE_HELLO:
		l->ready = true;
		l->max_held = rec->hello.max_held;
		break;
	case DMABROKER_WIRE_FRAME:
		l->last_seq = rec->frame.seq;
		if (rec->frame.index != DMABROKER_WIRE_NO_BUFFER)
			link_hold(l, rec->frame.index, rec->frame.seq);
		break;
	case DMABROKER_WIRE_RELEASE:
		link_unhold(l, rec->release.index);
		break;
	}
}

int link_send(struct stream_link *l, const union db_wire_record *rec, int fence,
	      const char **ret_reason)
{
	uint8_t buf[DMABROKER_WIRE_RECORD_MAX];
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	int n;

	n = db_wire_encode(rec, buf, ret_reason);
	if (n < 0)
		return n;
	iov.iov_len = (size_t)n;
	if (fence >= 0) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		mh.msg_control = control.b;
		mh.msg_controllen = sizeof(control.b);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fence, sizeof(int));
	}
	if (sendmsg(l->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) != n) {
		int r = errno == EWOULDBLOCK ? -EAGAIN : -errno;

		*ret_reason = r == -EAGAIN ? "the link is full: the other end does not read"
					   : "the link is gone";
		return r;
	}
	return 0;
}
