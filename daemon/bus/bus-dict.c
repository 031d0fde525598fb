// SPDX-License-Identifier: MIT
#include "bus-dict.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-text.h"
#include "macros.h"
#include "protocol.h"

void db_strv_free(char **strv)
{
	if (!strv)
		return;
	for (char **s = strv; *s; s++)
		free(*s);
	free(strv);
}

static const char *signature_of(enum db_dict_type t)
{
	static const char *const sigs[] = {
		[DB_DICT_STRING] = "s",	    [DB_DICT_BOOL] = "b",  [DB_DICT_U32] = "u",
		[DB_DICT_U64] = "t",	    [DB_DICT_STRV] = "as", [DB_DICT_U32_ARRAY] = "au",
		[DB_DICT_U64_ARRAY] = "at", [DB_DICT_DICT] = "a{sv}",
	};

	return sigs[t];
}

static int read_value(sd_bus_message *m, struct db_dict_field *f, const char *what,
		      sd_bus_error *error)
{
	int r, v;

	switch (f->type) {
	case DB_DICT_STRING: {
		const char *s;

		r = sd_bus_message_read_basic(m, 's', &s);
		if (r < 0)
			return r;
		r = db_bus_check_text(what, f->key, s, f->max_bytes, 0, error);
		if (r < 0)
			return r;
		*(const char **)f->dest = s;
		return 0;
	}
	case DB_DICT_BOOL:
		r = sd_bus_message_read_basic(m, 'b', &v);
		if (r >= 0)
			*(bool *)f->dest = v;
		return r;
	case DB_DICT_U32:
		return sd_bus_message_read_basic(m, 'u', f->dest);
	case DB_DICT_U64:
		return sd_bus_message_read_basic(m, 't', f->dest);
	case DB_DICT_STRV: {
		char **strv = NULL;
		size_t n = 0;

		r = sd_bus_message_read_strv(m, &strv);
		if (r < 0)
			return r;
		while (strv && strv[n])
			n++;
		if (n > f->max) {
			db_strv_free(strv);
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: '%s' has %zu entries, at most %u are allowed",
						 what, f->key, n, f->max);
		}
		for (size_t i = 0; i < n; i++) {
			r = db_bus_check_text(what, f->key, strv[i], f->max_bytes, 0, error);
			if (r < 0) {
				db_strv_free(strv);
				return r;
			}
		}
		db_strv_free(*(char ***)f->dest);
		*(char ***)f->dest = strv;
		return 0;
	}
	case DB_DICT_U32_ARRAY:
	case DB_DICT_U64_ARRAY: {
		size_t elem = f->type == DB_DICT_U32_ARRAY ? sizeof(uint32_t) : sizeof(uint64_t);
		const void *p;
		size_t size;

		r = sd_bus_message_read_array(m, f->type == DB_DICT_U32_ARRAY ? 'u' : 't', &p,
					      &size);
		if (r < 0)
			return r;
		if (size / elem > f->max)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: '%s' has %zu entries, at most %u are allowed",
						 what, f->key, size / elem, f->max);
		if (size)
			memcpy(f->dest, p, size);
		*f->count = (uint32_t)(size / elem);
		return 0;
	}
	case DB_DICT_DICT:
		return f->read_dict(m, f->dest, error);
	}
	return -EINVAL;
}

int db_dict_read(sd_bus_message *m, struct db_dict_field *fields, size_t n_fields, const char *what,
		 sd_bus_error *error)
{
	unsigned entries = 0;
	int r;

	r = sd_bus_message_enter_container(m, 'a', "{sv}");
	if (r < 0)
		return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
					 "%s: expected a dictionary (a{sv})", what);
	while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
		struct db_dict_field *f = NULL;
		const char *key, *contents;
		char type;

		if (++entries > DB_DICT_MAX_ENTRIES)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: more than %d entries", what,
						 DB_DICT_MAX_ENTRIES);
		/* sd-bus refuses a string that is not UTF-8 here (-EBADMSG): name the argument. */
		r = sd_bus_message_read_basic(m, 's', &key);
		if (r < 0)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: a key could not be read (not UTF-8?)", what);
		for (size_t i = 0; i < n_fields; i++)
			if (strcmp(fields[i].key, key) == 0)
				f = &fields[i];
		if (!f) {
			/* The key is the client's text too: echoed escaped, and cut. */
			char shown[64];

			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: unknown key '%s'", what,
						 db_text_escape(key, shown, sizeof(shown)));
		}
		if (f->seen)
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: key '%s' given twice", what, key);
		f->seen = true;
		/* sd-bus checks the variant's type (-ENXIO if it is another): the type is looked
		 * at separately only to say what it was. */
		r = sd_bus_message_enter_container(m, 'v', signature_of(f->type));
		if (r == -ENXIO) {
			if (sd_bus_message_peek_type(m, &type, &contents) < 0 || !contents)
				contents = "?";
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: '%s' must be of type '%s', not '%s'", what,
						 key, signature_of(f->type), contents);
		}
		if (r < 0)
			return r;
		r = read_value(m, f, what, error);
		if (r < 0 && !sd_bus_error_is_set(error))
			return sd_bus_error_setf(error, DB_ERROR_INVALID_ARGUMENT,
						 "%s: '%s' could not be read (not UTF-8?)", what,
						 f->key);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
		r = sd_bus_message_exit_container(m);
		if (r < 0)
			return r;
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}
