// SPDX-License-Identifier: MIT
/* The one check for client text, its escaper for echoes and its sanitizer for messages. */
#include <errno.h>
#include <string.h>

#include "macros.h"
#include "tap.h"
#include "text.h"

static void test_check(void)
{
	static const struct {
		const char *s;
		unsigned flags;
		int want;
		const char *what;
	} cases[] = {
		{"", 0, 0, "empty"},
		{"gpu-side (vgem, /dev/dri/renderD128)", 0, 0, "a label"},
		{"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, 0,
		 "two-, three- and four-byte UTF-8"},
		{"caf\xc3\xa9", DB_TEXT_ASCII, -EINVAL, "UTF-8 where ASCII is asked for"},
		{"a\nDMABROKER forged", 0, -EINVAL, "a newline"},
		{"a\rb", 0, -EINVAL, "a carriage return"},
		{"a\tb", 0, -EINVAL, "a tab"},
		{"\x1b[31mred", 0, -EINVAL, "a terminal escape"},
		{"a\x7f", 0, -EINVAL, "DEL"},
		{"a\xc2\x85", 0, -EINVAL, "NEL (C1)"},
		{"a\xe2\x80\xa8", 0, -EINVAL, "U+2028 line separator"},
		{"a\xe2\x80\xae", 0, -EINVAL, "U+202E right-to-left override"},
		{"a\xe2\x81\xa6", 0, -EINVAL, "U+2066 left-to-right isolate"},
		{"a\xff", 0, -EILSEQ, "0xff"},
		{"a\x80", 0, -EILSEQ, "a stray continuation byte"},
		{"a\xc0\xaf", 0, -EILSEQ, "an overlong slash"},
		{"a\xe0\x80\x8a", 0, -EILSEQ, "an overlong newline"},
		{"a\xed\xa0\x80", 0, -EILSEQ, "a surrogate"},
		{"a\xf4\x90\x80\x80", 0, -EILSEQ, "past U+10FFFF"},
		{"a\xe2\x82", 0, -EILSEQ, "a cut sequence"},
	};
	char big[DB_TEXT_MAX + 2];
	size_t off;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		tap_is(db_text_check(cases[i].s, DB_TEXT_MAX, cases[i].flags, NULL), cases[i].want,
		       cases[i].what);
	tap_is(db_text_check("ab\ncd", 16, 0, &off), -EINVAL, "the offset of a newline ...");
	tap_is(off, 2, "... is where it is");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	tap_is(db_text_check(big, DB_TEXT_MAX, 0, NULL), -ENAMETOOLONG, "DB_TEXT_MAX + 1 bytes");
	big[DB_TEXT_MAX] = '\0';
	tap_is(db_text_check(big, DB_TEXT_MAX, 0, NULL), 0, "DB_TEXT_MAX bytes");
	tap_is(db_text_check("abcd", 3, 0, NULL), -ENAMETOOLONG, "the bound is in bytes");
	tap_ok(strstr(db_text_problem(-EILSEQ), "UTF-8") != NULL, "the problems have words");
}

static void test_escape(void)
{
	char out[32];

	tap_ok(strcmp(db_text_escape("a\nb\\c\xff", out, sizeof(out)), "a\\x0ab\\x5cc\\xff") == 0,
	       "escapes controls, backslashes and high bytes (%s)", out);
	tap_ok(db_text_check(db_text_escape("\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b\x1b", out, 10), 32,
			     DB_TEXT_ASCII, NULL) == 0 &&
		       strcmp(out, "\\x1b\\x1b") == 0,
	       "cuts at a whole escape (%s)", out);
	tap_ok(strcmp(db_text_escape("abc", out, 1), "") == 0, "a one-byte buffer holds nothing");
}

static void test_sanitize(void)
{
	char a[] = "ok\nforged\x1b[0m";
	char b[] = "caf\xc3\xa9 cut \xe2\x82";
	char c[] = "bad \xff\xfe middle \xc3\xa9";
	char d[] = "nel\xc2\x85.";

	db_text_sanitize(a);
	tap_ok(strcmp(a, "ok?forged?[0m") == 0, "controls become '?' (%s)", a);
	db_text_sanitize(b);
	tap_ok(strcmp(b, "caf\xc3\xa9 cut ") == 0, "a sequence cut at the end is dropped");
	db_text_sanitize(c);
	tap_ok(strcmp(c, "bad ?? middle \xc3\xa9") == 0, "invalid bytes become '?'");
	db_text_sanitize(d);
	tap_ok(strcmp(d, "nel??.") == 0, "a C1 control becomes '?' byte for byte");
	tap_ok(db_text_check(a, 64, 0, NULL) == 0 && db_text_check(b, 64, 0, NULL) == 0 &&
		       db_text_check(c, 64, 0, NULL) == 0 && db_text_check(d, 64, 0, NULL) == 0,
	       "sanitized text passes the check");
}

int main(void)
{
	test_check();
	test_escape();
	test_sanitize();
	return tap_done();
}
