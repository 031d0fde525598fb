/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Client text: one check for every string a client supplies (names, roles, device paths,
 * reasons, backend names, dictionary keys), before anything stores, logs or publishes it.
 * Such text reaches the daemon's log, other users' listings and signals: a line break in it
 * forges log lines, a terminal escape or bidi control rewrites what a reader sees, and a
 * byte that is not UTF-8 makes sd-bus refuse the message that would carry it on. So text is
 * bounded, UTF-8, and free of control and formatting characters. And what the daemon echoes
 * of a client's bytes is escaped, never raw.
 */

#include <stdbool.h>
#include <stddef.h>

/* The longest string any argument takes (Revoke's reason; names are bounded lower). */
#define DB_TEXT_MAX 256

enum {
	/* Printable ASCII only: names end up in DMA_BUF_SET_NAME and /proc. */
	DB_TEXT_ASCII = 1 << 0,
};

/*
 * 0 if s is at most max bytes of UTF-8 without control characters (C0, DEL, C1) or the
 * characters that break or reorder lines (U+2028, U+2029, bidi embeddings, overrides and
 * isolates). -ENAMETOOLONG: longer than max; -EILSEQ: not UTF-8 (overlong forms, surrogates
 * and cut sequences included); -EINVAL: a control character, or outside printable ASCII with
 * DB_TEXT_ASCII. *ret_offset (may be NULL): where the first offending byte is.
 */
int db_text_check(const char *s, size_t max, unsigned flags, size_t *ret_offset);

/* What db_text_check's error means, for a message: "holds a control character", ... */
const char *db_text_problem(int r);

/*
 * Writes s into out (out_size bytes, NUL-terminated, cut at a character) as printable
 * ASCII: every other byte, and the backslash, as \xNN. For echoing a client's string in a
 * message or log line whatever it holds. Returns out.
 */
const char *db_text_escape(const char *s, char *out, size_t out_size);

/*
 * Makes text the daemon composed (from checked parts, maybe cut at a fixed size) safe to
 * send and log, in place: each byte of an invalid sequence and each control character
 * becomes '?', and a sequence cut at the end is dropped. Afterwards db_text_check passes.
 */
void db_text_sanitize(char *s);
