// SPDX-License-Identifier: MIT
#include "text.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/*
 * Decodes one UTF-8 sequence at s (len bytes left). Returns its length and the code point,
 * or 0 if it is not one: a stray continuation byte, an overlong form, a surrogate, a code
 * point past U+10FFFF, or a sequence cut short (by the end or a NUL).
 */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *ret)
{
	uint32_t cp, min;
	size_t n;

	if (s[0] < 0x80) {
		*ret = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = s[0] & 0x1f;
		min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = s[0] & 0x0f;
		min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = s[0] & 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret = cp;
	return n;
}

/* Characters that end or reorder a line for whoever reads it: never in client text. */
static bool is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
	       (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
	       cp == 0x200f || cp == 0x061c;
}

int db_text_check(const char *s, size_t max, unsigned flags, size_t *ret_offset)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t len, i = 0;
	int r = 0;

	/* Never read further than the bound (and its terminator) to say it is too long. */
	len = strnlen(s, max + 1);
	if (len > max) {
		r = -ENAMETOOLONG;
		i = max;
		goto out;
	}
	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);

		if (n == 0) {
			r = -EILSEQ;
			break;
		}
		if (is_control(cp) || ((flags & DB_TEXT_ASCII) && cp > 0x7e)) {
			r = -EINVAL;
			break;
		}
		i += n;
	}
out:
	if (ret_offset)
		*ret_offset = r < 0 ? i : 0;
	return r;
}

const char *db_text_problem(int r)
{
	switch (r) {
	case 0:
		return "is valid";
	case -ENAMETOOLONG:
		return "is too long";
	case -EILSEQ:
		return "is not UTF-8";
	default:
		return "holds a control character or one outside what it may hold";
	}
}

const char *db_text_escape(const char *s, char *out, size_t out_size)
{
	size_t o = 0;

	if (out_size == 0)
		return out;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = *p >= 0x20 && *p <= 0x7e && *p != '\\';
		size_t need = plain ? 1 : 4;

		/* Whole characters or nothing: the result is never a cut escape. */
		if (o + need >= out_size)
			break;
		if (plain)
			out[o++] = (char)*p;
		else
			o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", *p);
	}
	out[o] = '\0';
	return out;
}

void db_text_sanitize(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t len = strlen(s), i = 0;

	while (i < len) {
		uint32_t cp;
		size_t n = utf8_decode(p + i, len - i, &cp);

		if (n == 0) {
			/* A sequence cut by the end of a fixed-size buffer: drop the remnant. */
			if (p[i] >= 0xc0 && len - i < 4) {
				bool cut = true;

				for (size_t k = i + 1; k < len; k++)
					cut &= (p[k] & 0xc0) == 0x80;
				if (cut) {
					p[i] = '\0';
					return;
				}
			}
			p[i++] = '?';
			continue;
		}
		if (is_control(cp))
			memset(p + i, '?', n);
		i += n;
	}
}
