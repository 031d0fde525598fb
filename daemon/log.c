// SPDX-License-Identifier: MIT
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "text.h"

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
	char line[2048];
	va_list ap;

	if ((int)level > max_level)
		return;
	va_start(ap, fmt);
	errno = saved; /* so %m names the caller's error */
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/*
	 * One line per call, whatever went into it: client text is checked where it is read,
	 * and this is the backstop for what a new path forgets (a line break would forge the
	 * next log line, an escape rewrite a terminal).
	 */
	db_text_sanitize(line);
	if (journal)
		fprintf(stderr, "<%d>%s\n", (int)level, line);
	else
		fprintf(stderr, "dmabrokerd: %s\n", line);
	errno = saved;
}
