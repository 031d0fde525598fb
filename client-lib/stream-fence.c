// SPDX-License-Identifier: MIT
/*
 * A stream's fences (docs/streams.md): a dma-buf's fences as a sync_file and back (implicit
 * sync), two sync_files as one, and dmabroker_fence_wait(). A buffer that is no dma-buf (a
 * memfd) has no fences: export gives none and import does nothing.
 */
#include "libdmabroker-private.h"

#include <linux/sync_file.h>

#include "stream-link.h"
#include "stream-private.h"

/* The fences of a dma-buf as one sync_file (owned), or -1 when it is no dma-buf. */
int export_fence(struct dmabroker_buffer *buf, uint32_t flags)
{
	struct dma_buf_export_sync_file e = {.flags = flags, .fd = -1};

	if (!buf || !buf->dmabuf)
		return -1;
	if (ioctl(buf->fd, DMA_BUF_IOCTL_EXPORT_SYNC_FILE, &e) < 0) {
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: exporting a fence failed: %m");
		return -1;
	}
	return e.fd;
}

/* Puts fence into a dma-buf's own fences; false when it is no dma-buf (nothing done). */
bool import_fence(struct dmabroker_buffer *buf, int fence, uint32_t flags)
{
	struct dma_buf_import_sync_file i = {.flags = flags, .fd = fence};

	if (!buf || !buf->dmabuf)
		return false;
	if (ioctl(buf->fd, DMA_BUF_IOCTL_IMPORT_SYNC_FILE, &i) < 0) {
		/* The device does not take it: waiting here keeps the order it stands for. */
		log_msg(DMABROKER_LOG_DEBUG, "dmabroker: importing a fence failed: %m");
		(void)dmabroker_fence_wait(fence, UINT64_MAX);
	}
	return true;
}

/* One sync_file that signals when both do (owned); a and b are taken. */
int merge_fences(int a, int b)
{
	struct sync_merge_data m = {.name = "dmabroker", .fd2 = b};

	if (a < 0)
		return b;
	if (b < 0)
		return a;
	if (ioctl(a, SYNC_IOC_MERGE, &m) < 0) {
		/* Nothing to hand on that stands for both: wait for one, keep the other. */
		(void)dmabroker_fence_wait(a, UINT64_MAX);
		close(a);
		return b;
	}
	close(a);
	close(b);
	return m.fence;
}

int dmabroker_fence_wait(int fence, uint64_t timeout_usec)
{
	uint64_t deadline = timeout_usec == UINT64_MAX ? UINT64_MAX : now_usec() + timeout_usec;

	if (fence < 0)
		return 0;
	for (;;) {
		struct pollfd p = {.fd = fence, .events = POLLIN};
		uint64_t now = now_usec();
		int ms = deadline == UINT64_MAX ? -1
			 : deadline <= now	? 0
						: (int)((deadline - now + 999) / 1000);
		int r;

		if (deadline != UINT64_MAX && deadline - now > (uint64_t)INT32_MAX * 1000)
			ms = INT32_MAX;
		r = poll(&p, 1, ms);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r > 0)
			return p.revents & POLLNVAL ? -EBADF : 0;
		if (now_usec() >= deadline)
			return -ETIMEDOUT;
	}
}
