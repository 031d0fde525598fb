// SPDX-License-Identifier: MIT
#include "kernel-view.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd-util.h"
#include "macros.h"

/* "0" or "1" exactly. */
static int parse_flag(const char *s, size_t len, bool *ret)
{
	if (len != 1 || (s[0] != '0' && s[0] != '1'))
		return -EINVAL;
	*ret = s[0] == '1';
	return 0;
}

/* A decimal number of up to 9 digits, nothing else. */
static int parse_count(const char *s, size_t len, long *ret)
{
	long v = 0;

	if (len == 0 || len > 9)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return 0;
}

/* A known flag key of an attachment line: 0 parsed, -EINVAL if repeated or not 0/1. */
static int parse_key_flag(const char *v, size_t len, bool *have, bool *ret)
{
	if (*have || parse_flag(v, len, ret) < 0)
		return -EINVAL;
	*have = true;
	return 0;
}

/*
 * One attachment line's value, len bytes, not terminated: space-separated key=value pairs,
 * dev= last, taking the rest of the line (a device name may hold spaces). Unknown keys are
 * skipped; importer_dynamic and dev are required, pinned, peer2peer and cached optional.
 */
static int parse_attachment(const char *value, size_t len, struct db_kernel_attachment *a)
{
	const char *p = value, *end = value + len;
	bool have_dynamic = false;

	while (p < end) {
		const char *eq = memchr(p, '=', (size_t)(end - p));
		const char *sp;
		size_t key_len;

		if (!eq)
			return -EINVAL;
		key_len = (size_t)(eq - p);
		if (key_len == 3 && memcmp(p, "dev", 3) == 0) {
			size_t n = (size_t)(end - eq - 1);

			if (n == 0 || n >= sizeof(a->dev) || memchr(eq + 1, '\0', n))
				return -EINVAL;
			memcpy(a->dev, eq + 1, n);
			a->dev[n] = '\0';
			return have_dynamic ? 0 : -EINVAL;
		}
		sp = memchr(eq, ' ', (size_t)(end - eq));
		if (!sp)
			return -EINVAL; /* dev= must come last */
		const char *v = eq + 1;
		size_t v_len = (size_t)(sp - eq - 1);
		int r = 0;

		if (key_len == 16 && memcmp(p, "importer_dynamic", 16) == 0)
			r = parse_key_flag(v, v_len, &have_dynamic, &a->importer_dynamic);
		else if (key_len == 6 && memcmp(p, "pinned", 6) == 0)
			r = parse_key_flag(v, v_len, &a->has_pinned, &a->pinned);
		else if (key_len == 9 && memcmp(p, "peer2peer", 9) == 0)
			r = parse_key_flag(v, v_len, &a->has_peer2peer, &a->peer2peer);
		else if (key_len == 6 && memcmp(p, "cached", 6) == 0)
			r = parse_key_flag(v, v_len, &a->has_cached, &a->cached);
		if (r < 0)
			return r;
		p = sp + 1;
	}
	return -EINVAL;
}

static bool line_has_key(const char *line, size_t len, const char *key, const char **value,
			 size_t *value_len)
{
	size_t n = strlen(key);

	if (len < n + 2 || memcmp(line, key, n) != 0 || line[n] != ':' || line[n + 1] != '\t')
		return false;
	*value = line + n + 2;
	*value_len = len - n - 2;
	return true;
}

int db_kernel_view_parse(const char *text, size_t len, struct db_kernel_view *ret)
{
	struct db_kernel_view v = {.file_count = -1};
	const char *p = text, *end = text + len;
	bool have_count = false;
	unsigned n_lines = 0;
	int r;

	(void)db_kernel_view_parse_file_count(text, len, &v.file_count);

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t line_len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *value;
		size_t value_len;

		/* The name comes last and is whatever a holder set, newlines included. */
		if (line_has_key(p, line_len, "name", &value, &value_len))
			break;
		if (line_has_key(p, line_len, "exp_dynamic", &value, &value_len)) {
			if (v.available)
				return -EBADMSG;
			if (parse_flag(value, value_len, &v.exp_dynamic) < 0)
				return -EINVAL;
			v.available = true;
		} else if (line_has_key(p, line_len, "attachments", &value, &value_len)) {
			long n;

			if (have_count)
				return -EBADMSG;
			if (value_len == 4 && memcmp(value, "busy", 4) == 0)
				v.busy = true;
			else if (parse_count(value, value_len, &n) < 0)
				return -EINVAL;
			else
				v.n_reported = (unsigned)n;
			have_count = true;
		} else if (line_has_key(p, line_len, "attachment", &value, &value_len)) {
			struct db_kernel_attachment a = {0};

			r = parse_attachment(value, value_len, &a);
			if (r < 0)
				return r;
			if (v.n_attachments < DB_KERNEL_VIEW_MAX_ATTACHMENTS)
				v.attachments[v.n_attachments++] = a;
			n_lines++;
		}
		p += line_len + 1;
	}
	if (v.available != have_count)
		return -EINVAL;
	if (!v.available && n_lines)
		return -EINVAL;
	if (v.busy && n_lines)
		return -EINVAL; /* a busy report lists nothing */
	if (v.available && n_lines != v.n_reported)
		return -EBADMSG;
	*ret = v;
	return 0;
}

int db_kernel_view_parse_file_count(const char *text, size_t len, long *ret)
{
	const char *p = text, *end = text + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t line_len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *value;
		size_t value_len;

		/* Whatever follows the name may have been written by a holder. */
		if (line_has_key(p, line_len, "name", &value, &value_len))
			break;
		if (line_has_key(p, line_len, "count", &value, &value_len))
			return parse_count(value, value_len, ret);
		p += line_len + 1;
	}
	return -ENODATA;
}

static int read_fdinfo(int fd, char **ret)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	return read_small_file(path, ret, 16384);
}

int db_kernel_view_read(int fd, struct db_kernel_view *ret)
{
	_cleanup_(freep) char *text = NULL;
	int r = read_fdinfo(fd, &text);

	if (r < 0)
		return r;
	return db_kernel_view_parse(text, (size_t)r, ret);
}

int db_kernel_view_read_file_count(int fd, long *ret)
{
	_cleanup_(freep) char *text = NULL;
	int r = read_fdinfo(fd, &text);

	if (r < 0)
		return r;
	return db_kernel_view_parse_file_count(text, (size_t)r, ret);
}
