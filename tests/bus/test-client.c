// SPDX-License-Identifier: MIT
/*
 * A client process for the bus tests, so that sharing crosses process (and uid) boundaries:
 *   test-client import TOKEN [--dynamic] [--expect B] [--write B]   import, check, write, exit
 *   test-client hold TOKEN [--dynamic]                              import, print "ready", wait
 *   test-client allocate SIZE B [--dynamic]                          allocate, fill, print token, wait
 * Exit status: 0 done, 2 the daemon refused (the error is printed), 3 wrong contents.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dmabroker.h"

static int fill_or_check(struct dmabroker_buffer *buf, int expect, int write_byte)
{
	uint8_t *p;
	uint64_t size = dmabroker_buffer_get_size(buf);
	int r;

	r = dmabroker_buffer_map(buf, (void **)&p);
	if (r < 0)
		return r;
	r = dmabroker_buffer_begin_cpu_access(buf, DMABROKER_ACCESS_READ | DMABROKER_ACCESS_WRITE);
	if (r < 0)
		return r;
	for (uint64_t i = 0; expect >= 0 && i < size; i++)
		if (p[i] != (uint8_t)expect) {
			fprintf(stderr, "byte %llu is 0x%02x, want 0x%02x\n", (unsigned long long)i,
				p[i], expect);
			dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ);
			return 1;
		}
	if (write_byte >= 0)
		memset(p, write_byte, size);
	return dmabroker_buffer_end_cpu_access(buf, DMABROKER_ACCESS_READ | DMABROKER_ACCESS_WRITE);
}

int main(int argc, char **argv)
{
	struct dmabroker *ctx = NULL;
	struct dmabroker_buffer *buf = NULL;
	struct dmabroker_token token;
	bool dynamic = false;
	int expect = -1, write_byte = -1, r;
	char c;

	if (argc < 3)
		return 64;
	for (int i = 3; i < argc; i++) {
		if (strcmp(argv[i], "--dynamic") == 0)
			dynamic = true;
		else if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc)
			expect = (int)strtol(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--write") == 0 && i + 1 < argc)
			write_byte = (int)strtol(argv[++i], NULL, 0);
	}
	r = dmabroker_connect(&ctx, NULL, 0);
	if (r >= 0)
		r = dmabroker_register(ctx, "cpu", dynamic, "test-client", NULL);
	if (r < 0) {
		fprintf(stderr, "connect/register: %s %s\n", strerror(-r),
			dmabroker_last_error(ctx));
		return 1;
	}
	if (strcmp(argv[1], "allocate") == 0) {
		struct dmabroker_alloc_spec spec = {.size = strtoull(argv[2], NULL, 0)};
		char hex[DMABROKER_TOKEN_STRING_SIZE];

		r = dmabroker_allocate(ctx, &spec, sizeof(spec), &buf);
		if (r >= 0)
			r = fill_or_check(buf, -1, (int)strtol(argv[3], NULL, 0));
		if (r >= 0)
			r = dmabroker_share(buf, NULL, 0, &token);
		if (r < 0) {
			printf("error %s\n", dmabroker_last_error(ctx));
			return 2;
		}
		dmabroker_token_to_string(&token, hex);
		printf("%s\n", hex);
		fflush(stdout);
		while (read(STDIN_FILENO, &c, 1) > 0)
			;
		dmabroker_disconnect(ctx);
		return 0;
	}
	if (dmabroker_token_from_string(argv[2], &token) < 0)
		return 64;
	if (strcmp(argv[1], "join-and-die") == 0) {
		struct dmabroker_collection *col = NULL;

		/* Joins a collection and is killed before it sets constraints. */
		r = dmabroker_collection_join(ctx, &token, &col);
		if (r < 0)
			return 2;
		kill(getpid(), SIGKILL);
	}
	r = dmabroker_import(ctx, &token, &buf);
	if (r < 0) {
		printf("error %s\n", dmabroker_last_error(ctx));
		dmabroker_disconnect(ctx);
		return 2;
	}
	printf("path %s\n", dmabroker_buffer_get_attach_path(buf) == DMABROKER_PATH_CACHED
				    ? "cached"
				    : "direct");
	fflush(stdout);
	if (strcmp(argv[1], "hold") == 0) {
		printf("ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	r = fill_or_check(buf, expect, write_byte);
	dmabroker_disconnect(ctx);
	if (r < 0)
		return 1;
	return r ? 3 : 0;
}
