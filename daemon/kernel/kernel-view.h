/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * The kernel's own view of a dma-buf, from /proc/PID/fdinfo/FD: its file count (stock
 * kernels print it), and, with the project's kernel patches, its device attachments
 * (kernel-patches/README.md):
 *
 *   exp_dynamic:	<0|1>
 *   attachments:	<N>
 *   attachment:	importer_dynamic=<0|1> cached=<0|1> [key=value ...] dev=<device name>
 *
 * one attachment line per attachment; keys the parser does not know are skipped, so the
 * format can grow. The dma-buf's name (a "name:" line) is set by any holder and may hold
 * newlines: a report whose lines appear twice, or whose attachment lines do not add up to
 * its count, was forged through the name and is refused (-EBADMSG), and the file count is
 * taken only from before the name.
 */

#define DB_KERNEL_VIEW_MAX_ATTACHMENTS 32

struct db_kernel_attachment {
	char dev[64];
	bool importer_dynamic;
	bool cached;
};

struct db_kernel_view {
	long file_count; /* references to the dma-buf's file, the reader's excluded; -1: unknown */
	bool available; /* the kernel printed the attachment report */
	bool exp_dynamic;
	unsigned n_attachments; /* as many as were parsed (at most the maximum) */
	unsigned n_reported; /* the kernel's own count */
	struct db_kernel_attachment attachments[DB_KERNEL_VIEW_MAX_ATTACHMENTS];
};

/* Parses fdinfo text. -EINVAL for a report that is malformed, -EBADMSG for one that is
 * ambiguous (lines injected through the name). */
int db_kernel_view_parse(const char *text, size_t len, struct db_kernel_view *ret);

/* Reads and parses this process's fdinfo of fd. */
int db_kernel_view_read(int fd, struct db_kernel_view *ret);

/* Just the file count of fdinfo text (whatever the report says): -ENODATA if absent. */
int db_kernel_view_parse_file_count(const char *text, size_t len, long *ret);

/* The file count of this process's fd, the reader's own reference excluded. */
int db_kernel_view_read_file_count(int fd, long *ret);
