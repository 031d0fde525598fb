// SPDX-License-Identifier: MIT
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

static int max_level = DB_LOG_INFO;
static bool journal;

void db_log_init(int level)
{
	max_level = level;
	journal = getenv("JOURNAL_STREAM") != NULL;
}

void db_log(enum db_log_level level, const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	if ((int)level > max_level)
		return;
	if (journal)
		fprintf(stderr, "<%d>", (int)level);
	else
		fputs("dmabrokerd: ", stderr);
	va_start(ap, fmt);
	errno = saved; /* so %m names the caller's error */
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	errno = saved;
}
