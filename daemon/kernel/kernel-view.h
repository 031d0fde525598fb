/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * The kernel's own view of a dma-buf, from /proc/PID/fdinfo/FD: its file count (stock
 * kernels print it), and, with the project's kernel patches, its device attachments
 * (Documentation/filesystems/proc.rst of the patched kernel, docs/kernel-report.md):
 *
 *   exp_dynamic:	<0|1>
 *   attachments:	<N>|busy
 *   attachment:	importer_dynamic=<0|1> [pinned=<0|1>] [peer2peer=<0|1>] [cached=<0|1>]
 *			[key=value ...] dev=<device name>
 *
 * one attachment line per attachment; keys the parser does not know are skipped, so the
 * format can grow. "busy": the kernel did not wait for the lock that guards the list (an
 * importer held it), so this read says nothing about the attachments; the next may. cached
 * is printed only by kernels that keep a mapping per attachment (6.12; upstream dropped the
 * cache in 6.16): without it the view claims no cache.
 *
 * The dma-buf's name (a "name:" line, last) is set by any holder and may hold newlines and
 * text that looks like report lines: the parser stops at it, so nothing after it is read. A
 * report whose lines appear twice, or whose attachment lines do not add up to its count, is
 * refused (-EBADMSG).
 */

#define DB_KERNEL_VIEW_MAX_ATTACHMENTS 32

struct db_kernel_attachment {
	char dev[64];
	bool importer_dynamic;
	bool has_pinned; /* the kernel printed pinned= */
	bool pinned; /* the exporter holds a pin for this attachment */
	bool has_peer2peer;
	bool peer2peer; /* the importer accepts peer-to-peer memory */
	bool has_cached; /* the kernel printed cached=: it has a per-attachment cache */
	bool cached; /* the core keeps this attachment's mapping until detach */
};

struct db_kernel_view {
	long file_count; /* references to the dma-buf's file, the reader's excluded; -1: unknown */
	bool available; /* the kernel printed the attachment report */
	bool busy; /* "attachments: busy": nothing known about the attachments this time */
	bool exp_dynamic;
	unsigned n_attachments; /* as many as were parsed (at most the maximum) */
	unsigned n_reported; /* the kernel's own count */
	struct db_kernel_attachment attachments[DB_KERNEL_VIEW_MAX_ATTACHMENTS];
};

/* Parses fdinfo text up to the name. -EINVAL for a report that is malformed, -EBADMSG for
 * one that is ambiguous (lines repeated, or not adding up to the count). A busy report is
 * not an error: available and busy, no attachments. */
int db_kernel_view_parse(const char *text, size_t len, struct db_kernel_view *ret);

/* Reads and parses this process's fdinfo of fd. */
int db_kernel_view_read(int fd, struct db_kernel_view *ret);

/* Just the file count of fdinfo text (whatever the report says): -ENODATA if absent. */
int db_kernel_view_parse_file_count(const char *text, size_t len, long *ret);

/* The file count of this process's fd, the reader's own reference excluded. */
int db_kernel_view_read_file_count(int fd, long *ret);
