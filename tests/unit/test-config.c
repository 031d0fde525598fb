// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"

static int apply(struct db_config *c, const char *text, char *err)
{
	return db_config_apply_data(c, text, strlen(text), err, 256);
}

int main(void)
{
	struct db_config c;
	char err[256], dir[] = "/tmp/dmabroker-config-XXXXXX", path[300], dropin[330];
	uint64_t v;
	FILE *f;

	db_config_init_default(&c);
	tap_is(c.limits.max_name_length, 31, "default MaxNameLength fits the kernel's name");
	tap_is(apply(&c, "[Limits]\nMaxBufferSize=64M\nMaxClients=10\n", err), 0, "limits parse");
	tap_is(c.limits.max_buffer_size, 64 << 20, "64M is 64 MiB");
	tap_is(c.limits.max_clients, 10, "plain number");
	tap_is(apply(&c, "[Limits]\nMaxBufferSze=1\n", err), -EINVAL, "a typo is an error");
	tap_ok(strstr(err, "MaxBufferSze") != NULL, "naming the key");
	tap_is(apply(&c, "[Limits]\nMaxClients=0\n", err), -EINVAL, "below the minimum");
	tap_is(apply(&c, "[Limits]\nMaxClients=99999999999999999999\n", err), -EINVAL, "overflow");
	tap_is(c.limits.max_clients, 10, "a failed apply changes nothing");
	tap_is(apply(&c, "[Daemon]\nDefaultBackend=floppy\n", err), -EINVAL, "unknown backend");
	tap_is(apply(&c, "[Nonsense]\nA=1\n", err), -EINVAL, "unknown section");
	tap_is(db_config_parse_size("2G", &v), 0, "2G parses");
	tap_is(db_config_parse_size("16Q", &v), -EINVAL, "unknown suffix");

	/* A file plus drop-ins, applied in name order. */
	tap_require(mkdtemp(dir) != NULL, "temporary directory");
	snprintf(path, sizeof(path), "%s/dmabroker.conf", dir);
	f = fopen(path, "we");
	fputs("[Limits]\nMaxClients=5\nMaxTokensPerClient=7\n", f);
	fclose(f);
	snprintf(dropin, sizeof(dropin), "%s/dmabroker.conf.d", dir);
	mkdir(dropin, 0755);
	snprintf(dropin, sizeof(dropin), "%s/dmabroker.conf.d/50-more.conf", dir);
	f = fopen(dropin, "we");
	fputs("[Limits]\nMaxClients=6\n", f);
	fclose(f);
	tap_is(db_config_load(&c, path, err, sizeof(err)), 0, "file and drop-in load");
	tap_is(c.limits.max_clients, 6, "the drop-in wins");
	tap_is(c.limits.max_tokens_per_client, 7, "the file's other keys stay");
	unlink(dropin);
	snprintf(dropin, sizeof(dropin), "%s/dmabroker.conf.d", dir);
	rmdir(dropin);
	unlink(path);
	rmdir(dir);
	return tap_done();
}
