// SPDX-License-Identifier: MIT
/*
 * The stream link as a hostile peer drives it. Two parts, by the input's first byte:
 * - the codec alone: any bytes with 0..2 descriptors are decoded; what decodes encodes back
 *   to the same bytes (one encoder and one decoder agree);
 * - the library's receive path: packets of the input's choosing (sizes, bytes, descriptors of
 *   several kinds) written into a socketpair, read by link_recv() on a producer's or a
 *   consumer's end and applied as the library applies them, with frames "sent" in between
 *   so that releases can be valid. Nothing may read out of bounds, leak a descriptor or
 *   leave the link's state inconsistent.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "stream-link.h"
#include "stream-wire.h"

static void codec(const uint8_t *data, size_t size)
{
	union db_wire_record rec;
	uint8_t out[DMABROKER_WIRE_RECORD_MAX];
	const char *why = NULL;

	for (unsigned n_fds = 0; n_fds <= 2; n_fds++) {
		int r = db_wire_decode(data, size, n_fds, &rec, &why);
		int n;

		if (r < 0) {
			if (!why)
				abort();
			continue;
		}
		n = db_wire_encode(&rec, out, &why);
		if (n < 0 || (size_t)n != size || memcmp(out, data, size) != 0)
			abort();
	}
}

/* A descriptor of the kind the input asks for (-1: none could be made). */
static int make_fd(uint8_t kind)
{
	int p[2];

	switch (kind % 3) {
	case 0:
		return memfd_create("fuzz", MFD_CLOEXEC);
	case 1:
		return eventfd(0, EFD_CLOEXEC);
	default:
		if (pipe2(p, O_CLOEXEC) < 0)
			return -1;
		close(p[1]);
		return p[0];
	}
}

static bool send_packet(int fd, const uint8_t *bytes, size_t len, unsigned n_fds, uint8_t kind)
{
	union {
		struct cmsghdr align;
		char b[CMSG_SPACE(3 * sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = (void *)bytes, .iov_len = len};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	int fds[3];
	bool ok;

	for (unsigned i = 0; i < n_fds; i++)
		fds[i] = make_fd((uint8_t)(kind + i));
	for (unsigned i = 0; i < n_fds; i++)
		if (fds[i] < 0)
			n_fds = i;
	if (n_fds) {
		struct cmsghdr *c;

		memset(&control, 0, sizeof(control));
		mh.msg_control = control.b;
		mh.msg_controllen = CMSG_SPACE(n_fds * sizeof(int));
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(n_fds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, n_fds * sizeof(int));
	}
	ok = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0;
	for (unsigned i = 0; i < n_fds; i++)
		close(fds[i]);
	return ok;
}

/* Reads what waits as the library does: true while the link lives. */
static bool drain(struct stream_link *l)
{
	for (;;) {
		union db_wire_record rec;
		const char *why = NULL;
		int fence = -1;
		int r = link_recv(l, &rec, &fence, &why);

		if (r == -EAGAIN)
			return true;
		if (r == 0)
			return false;
		if (r < 0) {
			/* The library ends the link on the first violation, with a reason. */
			if (!why || fence != -1)
				abort();
			return false;
		}
		if (fence >= 0)
			close(fence);
		link_apply(l, &rec);
		if (l->n_held > l->buffer_count)
			abort();
	}
}

static void receive_path(const uint8_t *data, size_t size)
{
	struct stream_link *l;
	uint64_t seq = 0;
	int sv[2];

	if (size < 1)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return;
	l = link_new(sv[0], 7, data[0] & 1, 1 + ((data[0] >> 1) & 7));
	if (!l) {
		close(sv[1]);
		return;
	}
	data++;
	size--;
	/* Packets: [op][len][bytes...]. op: bit 7, a frame "sent" (producer) first in buffer
	 * op & 7; bits 0..1 the descriptor count, 2..3 their kind. */
	while (size >= 2) {
		uint8_t op = data[0];
		size_t len = data[1] <= size - 2 ? data[1] : size - 2;

		if ((op & 0x80) && l->producer)
			link_hold(l, op & 7, ++seq);
		if (!send_packet(sv[1], data + 2, len, op & 3, (uint8_t)(op >> 2)))
			break;
		data += 2 + len;
		size -= 2 + len;
		if (!drain(l))
			break;
	}
	close(sv[1]);
	(void)drain(l);
	link_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (data[0] & 0x80)
		codec(data + 1, size - 1);
	else
		receive_path(data + 1, size - 1);
	return 0;
}
