/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * The kernel's own view of a dma-buf's device attachments, as the project's kernel patches
 * print it in /proc/PID/fdinfo/FD (kernel-patches/README.md):
 *
 *   exp_dynamic:	<0|1>
 *   attachments:	<N>
 *   attachment:	importer_dynamic=<0|1> cached=<0|1> dev=<device name>
 *
 * one attachment line per attachment. Stock kernels print none of these lines.
 */

#define DB_KERNEL_VIEW_MAX_ATTACHMENTS 32

struct db_kernel_attachment {
	char dev[64];
	bool importer_dynamic;
	bool cached;
};

struct db_kernel_view {
	bool available; /* the kernel printed the report */
	bool exp_dynamic;
	unsigned n_attachments; /* as many as were parsed (at most the maximum) */
	unsigned n_reported; /* the kernel's own count */
	struct db_kernel_attachment attachments[DB_KERNEL_VIEW_MAX_ATTACHMENTS];
};

/* Parses fdinfo text. -EINVAL for a report that is there but malformed. */
int db_kernel_view_parse(const char *text, size_t len, struct db_kernel_view *ret);

/* Reads and parses this process's fdinfo of fd. */
int db_kernel_view_read(int fd, struct db_kernel_view *ret);
