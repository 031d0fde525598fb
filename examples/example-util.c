// SPDX-License-Identifier: MIT
#include "example-util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/dma-buf.h>

void example_die(struct example *ex, const char *fmt, ...)
{
	char msg[768];
	size_t n;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = strlen(msg);
	if (ex->ctx && dmabroker_last_error(ex->ctx)[0])
		snprintf(msg + n, sizeof(msg) - n, " (%s)", dmabroker_last_error(ex->ctx));
	fprintf(stderr, "%s: %s\n", ex->prog, msg);
	/* The reason on the "error" line too, for whoever reads only stdout (tests, the demo). */
	example_say("error", "%s", msg);
	exit(1);
}

void example_say(const char *key, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", key);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

void example_start(struct example *ex, const char *prog, const char *role, bool dynamic,
		   const char *const *devices)
{
	int r;

	ex->prog = prog;
	ex->ctx = NULL;
	r = dmabroker_connect(&ex->ctx, NULL, 0);
	if (r < 0)
		example_die(ex, "cannot connect to dmabrokerd: %s", strerror(-r));
	r = dmabroker_register(ex->ctx, role, dynamic, prog, devices);
	if (r < 0)
		example_die(ex, "cannot register: %s", strerror(-r));
	example_say("client", "%s", dmabroker_client_path(ex->ctx));
}

void example_finish(struct example *ex)
{
	ex->ctx = dmabroker_disconnect(ex->ctx);
}

void example_share(struct example *ex, struct dmabroker_buffer *buf)
{
	struct dmabroker_token token;
	char hex[DMABROKER_TOKEN_STRING_SIZE];
	int r;

	r = dmabroker_share(buf, NULL, 0, &token);
	if (r < 0)
		example_die(ex, "cannot share %s: %s", dmabroker_buffer_get_path(buf),
			    strerror(-r));
	dmabroker_token_to_string(&token, hex);
	example_say("token", "%s", hex);
}

void example_parse_token(struct example *ex, const char *hex, struct dmabroker_token *ret)
{
	if (!hex || dmabroker_token_from_string(hex, ret) < 0)
		example_die(ex, "'%s' is not a token (32 hex digits)", hex ? hex : "");
}

void example_hold(void)
{
	char c;

	while (read(STDIN_FILENO, &c, 1) > 0)
		;
}

struct dmabroker_collection *example_join_collection(struct example *ex, const char *hex,
						     const struct dmabroker_constraints *c)
{
	struct dmabroker_collection *col = NULL;
	struct dmabroker_token token;
	int r;

	example_parse_token(ex, hex, &token);
	r = dmabroker_collection_join(ex->ctx, &token, &col);
	if (r >= 0)
		r = dmabroker_collection_set_constraints(col, c, sizeof(*c));
	if (r >= 0)
		example_say("joined", "%s", dmabroker_collection_get_path(col));
	if (r >= 0)
		r = dmabroker_collection_wait(col);
	if (r < 0)
		example_die(ex, "collection: %s", dmabroker_last_error(ex->ctx));
	example_say("buffers", "%u", dmabroker_collection_get_buffer_count(col));
	return col;
}

bool example_wait_line(void)
{
	char c;

	while (read(STDIN_FILENO, &c, 1) > 0)
		if (c == '\n')
			return true;
	return false;
}

uint64_t example_checksum(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void sync_fd(int fd, uint64_t flags)
{
	struct dma_buf_sync sync = {.flags = flags};

	/* ENOTTY on a memfd: nothing to synchronise. */
	while (ioctl(fd, DMA_BUF_IOCTL_SYNC, &sync) < 0 && (errno == EINTR || errno == EAGAIN))
		;
}

int example_checksum_fd(int fd, size_t len, uint64_t *ret)
{
	void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	sync_fd(fd, DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
	*ret = example_checksum(p, len);
	sync_fd(fd, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
	munmap(p, len);
	return 0;
}
