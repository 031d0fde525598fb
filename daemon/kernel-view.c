// SPDX-License-Identifier: MIT
#include "kernel-view.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd-util.h"
#include "macros.h"

static int parse_bool_field(const char *s, const char *name, bool *ret)
{
	size_t n = strlen(name);

	/* s is NUL-terminated: each check stops at the terminator. */
	if (strncmp(s, name, n) != 0 || s[n] != '=' || (s[n + 1] != '0' && s[n + 1] != '1') ||
	    s[n + 2] != ' ')
		return -EINVAL;
	*ret = s[n + 1] == '1';
	return (int)n + 3;
}

/* One "importer_dynamic=<0|1> cached=<0|1> dev=<name>" value, len bytes, not terminated. */
static int parse_attachment(const char *value, size_t len, struct db_kernel_attachment *a)
{
	char line[256];
	size_t pos = 0;
	int r;

	if (len >= sizeof(line))
		return -EINVAL;
	memcpy(line, value, len);
	line[len] = '\0';
	r = parse_bool_field(line, "importer_dynamic", &a->importer_dynamic);
	if (r < 0)
		return r;
	pos += (size_t)r;
	r = parse_bool_field(line + pos, "cached", &a->cached);
	if (r < 0)
		return r;
	pos += (size_t)r;
	if (strncmp(line + pos, "dev=", 4) != 0)
		return -EINVAL;
	pos += 4;
	if (len - pos == 0 || len - pos >= sizeof(a->dev) || memchr(line + pos, '\0', len - pos))
		return -EINVAL;
	memcpy(a->dev, line + pos, len - pos + 1);
	return 0;
}

int db_kernel_view_parse(const char *text, size_t len, struct db_kernel_view *ret)
{
	struct db_kernel_view v = {0};
	const char *p = text, *end = text + len;
	bool have_count = false;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t line_len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *value;
		char number[16];
		char *num_end;

		if (line_len > 12 && strncmp(p, "exp_dynamic:\t", 13) == 0) {
			value = p + 13;
			if (line_len != 14 || (*value != '0' && *value != '1'))
				return -EINVAL;
			v.available = true;
			v.exp_dynamic = *value == '1';
		} else if (line_len > 13 && strncmp(p, "attachments:\t", 13) == 0) {
			size_t n = line_len - 13;

			if (n == 0 || n >= sizeof(number))
				return -EINVAL;
			memcpy(number, p + 13, n);
			number[n] = '\0';
			v.n_reported = (unsigned)strtoul(number, &num_end, 10);
			if (*num_end)
				return -EINVAL;
			have_count = true;
		} else if (line_len > 12 && strncmp(p, "attachment:\t", 12) == 0) {
			if (v.n_attachments < DB_KERNEL_VIEW_MAX_ATTACHMENTS) {
				int r = parse_attachment(p + 12, line_len - 12,
							 &v.attachments[v.n_attachments]);

				if (r < 0)
					return r;
				v.n_attachments++;
			}
		}
		p += line_len + 1;
	}
	if (v.available && !have_count)
		return -EINVAL;
	if (!v.available && (have_count || v.n_attachments))
		return -EINVAL;
	*ret = v;
	return 0;
}

int db_kernel_view_read(int fd, struct db_kernel_view *ret)
{
	_cleanup_(freep) char *text = NULL;
	char path[64];
	int r;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	r = read_small_file(path, &text, 16384);
	if (r < 0)
		return r;
	return db_kernel_view_parse(text, (size_t)r, ret);
}
