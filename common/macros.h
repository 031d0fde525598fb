/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define IS_POWER_OF_2(x) ((x) != 0 && (((x) & ((x)-1)) == 0))

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* strcmp() == 0 that takes NULL (equal only to NULL). */
static inline bool streq_ptr(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

static inline void freep(void *p)
{
	free(*(void **)p);
}

/* Closes *fd if it is valid; keeps errno, so it can run on error paths. */
static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

/* Hands an fd out of a _cleanup_(closep) variable. */
static inline int take_fd(int *fd)
{
	int r = *fd;
	*fd = -1;
	return r;
}

static inline void *take_ptr_(void **p)
{
	void *r = *p;
	*p = NULL;
	return r;
}
#define take_ptr(p) ((__typeof__(p))take_ptr_((void **)&(p)))
