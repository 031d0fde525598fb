// SPDX-License-Identifier: MIT
/* Tokens: the hex form, and redeeming arbitrary bytes against a registry with real tokens. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry.h"
#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct db_registry *reg;
	static struct db_client *issuer, *importer;
	struct db_token_bytes t;
	struct db_attachment *a;
	char text[80];

	if (!reg) {
		struct db_limits l;
		struct db_buffer *buf;
		struct db_token *tok;

		db_limits_init_default(&l);
		reg = db_registry_new(&l);
		db_registry_add_client(reg, ":1.1", 1000, 1, "cpu", true, "", NULL, &issuer);
		db_registry_add_client(reg, ":1.2", 1001, 2, "cpu", false, "", NULL, &importer);
		db_registry_add_buffer(reg, issuer, open("/dev/null", O_RDONLY | O_CLOEXEC), 4096,
				       NULL, "memfd", 0, "", NULL, &buf);
		for (int i = 0; i < 64; i++)
			db_registry_share(reg, issuer, buf, false, 0, i % 2, 1001, 0, &tok);
	}
	memcpy(text, data, size < sizeof(text) - 1 ? size : sizeof(text) - 1);
	text[size < sizeof(text) - 1 ? size : sizeof(text) - 1] = '\0';
	if (db_token_from_hex(text, &t) == 0) {
		char back[DB_TOKEN_HEX_LEN + 1];

		db_token_to_hex(&t, back);
		if (strncasecmp(back, text, DB_TOKEN_HEX_LEN) != 0)
			abort();
	}
	if (size >= DB_TOKEN_SIZE) {
		memcpy(t.b, data, DB_TOKEN_SIZE);
		/* 128 random bits are not guessed: anything fuzzed is refused. */
		if (db_registry_redeem(reg, importer, &t, 0, &a) != -ENOENT)
			abort();
	}
	return 0;
}
