/* SPDX-License-Identifier: MIT */
#pragma once

/* A small TAP producer: meson reads the plan, the points and the summary. */

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n, tap_failed;

__attribute__((format(printf, 2, 3))) static inline bool tap_ok(bool cond, const char *fmt, ...)
{
	va_list ap;

	printf("%sok %d - ", cond ? "" : "not ", ++tap_n);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!cond)
		tap_failed++;
	return cond;
}

__attribute__((format(printf, 1, 2))) static inline void tap_diag(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

#define tap_is(got, want, what)                                          \
	({                                                               \
		long long _g = (long long)(got), _w = (long long)(want); \
		bool _ok = tap_ok(_g == _w, "%s", what);                 \
		if (!_ok)                                                \
			tap_diag("  got %lld, want %lld", _g, _w);       \
		_ok;                                                     \
	})

/* Ends the run: the closing line meson and CI read, and the exit status. */
static inline int tap_done(void)
{
	/* The plan may come last in TAP: counting points by hand is a source of bugs. */
	printf("1..%d\n", tap_n);
	printf("# %d passed, %d failed\n", tap_n - tap_failed, tap_failed);
	return tap_failed ? 1 : 0;
}

/* Stops the run when a precondition fails: what follows would only fail in confusing ways. */
#define tap_require(cond, ...)                                     \
	do {                                                       \
		if (!tap_ok((cond), __VA_ARGS__)) {                \
			printf("Bail out! precondition failed\n"); \
			exit(1);                                   \
		}                                                  \
	} while (0)
