/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/*
 * Reads an a{sv} argument into typed fields. Unknown keys, duplicate keys and values of
 * the wrong type are errors with a message naming the key, so a client's typo never passes
 * silently. Every string (and every string of an as) passes the one text check
 * (bus-text.h) before the caller sees it. Strings point into the message (valid while it
 * lives).
 */
enum db_dict_type {
	DB_DICT_STRING, /* s  -> const char * */
	DB_DICT_BOOL, /* b  -> bool */
	DB_DICT_U32, /* u  -> uint32_t */
	DB_DICT_U64, /* t  -> uint64_t */
	DB_DICT_STRV, /* as -> char ** (malloc'd; free with db_strv_free) */
	DB_DICT_U32_ARRAY, /* au -> uint32_t[max], count in *count */
	DB_DICT_U64_ARRAY, /* at -> uint64_t[max], count in *count */
	DB_DICT_DICT, /* a{sv} -> read by read_dict(m, dest, error), a decoder of its own */
};

struct db_dict_field {
	const char *key;
	enum db_dict_type type;
	void *dest;
	uint32_t max; /* DB_DICT_STRV, DB_DICT_U32_ARRAY: most elements */
	uint32_t *count; /* DB_DICT_U32_ARRAY */
	uint32_t max_bytes; /* DB_DICT_STRING, DB_DICT_STRV: longest string; 0: DB_TEXT_MAX */
	/* DB_DICT_DICT: reads the nested a{sv} (with db_dict_read) into dest. */
	int (*read_dict)(sd_bus_message *m, void *dest, sd_bus_error *error);
	bool seen;
};

#define DB_DICT_MAX_ENTRIES 32

/* what names the argument in messages ("spec", "info", ...). */
int db_dict_read(sd_bus_message *m, struct db_dict_field *fields, size_t n_fields, const char *what,
		 sd_bus_error *error);

void db_strv_free(char **strv);
static inline void db_strv_freep(char ***p)
{
	db_strv_free(*p);
}
