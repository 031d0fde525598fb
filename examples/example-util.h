/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dmabroker.h"

/*
 * What the example clients share: connecting and registering, printing tokens for the
 * process that drives them, and a checksum two processes can compare.
 *
 * Protocol with the driver (a test or the demo): each client prints lines "key value" on
 * stdout (token, checksum, path, ...), then, when asked to hold, waits until its stdin closes.
 */

struct example {
	const char *prog;
	struct dmabroker *ctx;
};

/* Connects and registers; dies with a message on failure. */
void example_start(struct example *ex, const char *prog, const char *role, bool dynamic,
		   const char *const *devices);
void example_finish(struct example *ex);

__attribute__((format(printf, 2, 3), noreturn)) void example_die(struct example *ex,
								 const char *fmt, ...);

/* "key value" on stdout, flushed. */
__attribute__((format(printf, 2, 3))) void example_say(const char *key, const char *fmt, ...);

/* Shares buf and says "token HEX". */
void example_share(struct example *ex, struct dmabroker_buffer *buf);

/* Reads a token given as 32 hex characters. */
void example_parse_token(struct example *ex, const char *hex, struct dmabroker_token *ret);

/* Joins the collection a token (hex) names, sets c, says "joined PATH" and waits for the
 * buffers; dies with the daemon's reason on failure. */
struct dmabroker_collection *example_join_collection(struct example *ex, const char *hex,
						     const struct dmabroker_constraints *c);

/* Waits until stdin reaches end of file: the driver decides how long we hold. */
void example_hold(void);

/* Waits for one line on stdin (the driver says "go"); false at end of file. */
bool example_wait_line(void);

/* FNV-1a over the bytes: the same on every side that sees the same memory. */
uint64_t example_checksum(const void *p, size_t len);

/* Reads a whole dma-buf or memfd through a mapping bracketed by DMA_BUF_IOCTL_SYNC. */
int example_checksum_fd(int fd, size_t len, uint64_t *ret);
