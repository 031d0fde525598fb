// SPDX-License-Identifier: MIT
/* JSON for dmabrokerctl's --json output, written straight from D-Bus messages. */
#include "ctl-json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <string.h>

void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p == '\t')
			fputs("\\t", f);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f); /* D-Bus strings are valid UTF-8 */
	}
	fputc('"', f);
}

static int json_basic(FILE *f, sd_bus_message *m, char type)
{
	union {
		uint8_t y;
		int b;
		int16_t n;
		uint16_t q;
		int32_t i;
		uint32_t u;
		int64_t x;
		uint64_t t;
		double d;
		const char *s;
		int h;
	} v;
	int r = sd_bus_message_read_basic(m, type, &v);

	if (r <= 0)
		return r < 0 ? r : -EBADMSG;
	switch (type) {
	case 'y':
		fprintf(f, "%u", v.y);
		break;
	case 'b':
		fputs(v.b ? "true" : "false", f);
		break;
	case 'n':
		fprintf(f, "%d", v.n);
		break;
	case 'q':
		fprintf(f, "%u", v.q);
		break;
	case 'i':
		fprintf(f, "%" PRId32, v.i);
		break;
	case 'u':
		fprintf(f, "%" PRIu32, v.u);
		break;
	case 'x':
		fprintf(f, "%" PRId64, v.x);
		break;
	case 't':
		fprintf(f, "%" PRIu64, v.t);
		break;
	case 'd':
		fprintf(f, "%.17g", v.d);
		break;
	case 'h':
		fputs("null", f); /* a descriptor means nothing in text */
		break;
	default:
		json_string(f, v.s);
	}
	return 0;
}

int json_value(FILE *f, sd_bus_message *m)
{
	const char *contents;
	char type;
	int r;

	r = sd_bus_message_peek_type(m, &type, &contents);
	if (r <= 0)
		return r < 0 ? r : -EBADMSG;
	if (type != 'a' && type != 'r' && type != 'v' && type != 'e')
		return json_basic(f, m, type);
	r = sd_bus_message_enter_container(m, type, contents);
	if (r < 0)
		return r;
	if (type == 'v') {
		r = json_value(f, m);
	} else if (type == 'a' && contents[0] == '{') {
		char entry[64]; /* "{sv}" -> "sv" */
		size_t n = strlen(contents);
		bool first = true;

		if (n < 4 || n - 2 >= sizeof(entry))
			return -EBADMSG;
		memcpy(entry, contents + 1, n - 2);
		entry[n - 2] = '\0';
		fputc('{', f);
		while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', entry)) > 0) {
			const char *key;
			char key_type;

			sd_bus_message_peek_type(m, &key_type, NULL);
			if (!first)
				fputc(',', f);
			first = false;
			if (key_type == 's' || key_type == 'o' || key_type == 'g') {
				r = sd_bus_message_read_basic(m, key_type, &key);
				if (r >= 0)
					json_string(f, key);
			} else {
				/* JSON keys are strings: quote the number. */
				fputc('"', f);
				r = json_basic(f, m, key_type);
				fputc('"', f);
			}
			fputc(':', f);
			if (r >= 0)
				r = json_value(f, m);
			if (r >= 0)
				r = sd_bus_message_exit_container(m);
		}
		fputc('}', f);
	} else {
		bool first = true;

		fputc('[', f);
		while (r >= 0 && !sd_bus_message_at_end(m, false)) {
			if (!first)
				fputc(',', f);
			first = false;
			r = json_value(f, m);
		}
		fputc(']', f);
	}
	if (r < 0)
		return r;
	return sd_bus_message_exit_container(m);
}
