/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* A new descriptor (>= 3, close-on-exec) for the same file; negative errno on failure. */
int fd_dup_cloexec(int fd);

/* 1 if fd is a dma-buf (its file lives on the dma-buf pseudo filesystem), 0 if not,
 * negative errno if fd is not open. */
int fd_is_dmabuf(int fd);

/* Size of the file behind fd (lseek to the end, which dma-bufs support). */
int fd_get_size(int fd, size_t *ret_size);

/* The number of descriptors a process has open, from /proc/PID/fd. */
int proc_count_fds(pid_t pid);

/* Reads the whole of a small text file into a NUL-terminated heap buffer. */
int read_small_file(const char *path, char **ret, size_t max);
