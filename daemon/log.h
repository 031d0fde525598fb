/* SPDX-License-Identifier: MIT */
#pragma once

#include "macros.h"

/* Logs to stderr; with a "<N>" priority prefix when stderr is the journal, so the journal
 * keeps priorities. */
enum db_log_level {
	DB_LOG_ERR = 3,
	DB_LOG_WARNING = 4,
	DB_LOG_NOTICE = 5,
	DB_LOG_INFO = 6,
	DB_LOG_DEBUG = 7,
};

void db_log_init(int max_level);
void db_log(enum db_log_level level, const char *fmt, ...) _printf_(2, 3);

#define log_error(...) db_log(DB_LOG_ERR, __VA_ARGS__)
#define log_warning(...) db_log(DB_LOG_WARNING, __VA_ARGS__)
#define log_notice(...) db_log(DB_LOG_NOTICE, __VA_ARGS__)
#define log_info(...) db_log(DB_LOG_INFO, __VA_ARGS__)
#define log_debug(...) db_log(DB_LOG_DEBUG, __VA_ARGS__)
