// SPDX-License-Identifier: MIT
#include "fuzz-message.h"

#include <string.h>
#include <sys/socket.h>

#include "layout-bus.h"

static const char *const keys[] = {
	"size",		 "width", "height",	"fourcc",  "modifier", "stride_align",
	"backend",	 "name",  "contiguous", "offsets", "strides",  "single_use",
	"expires_in_ms", "uid",	  "role",	"dynamic", "devices",
};

struct reader {
	const uint8_t *p;
	size_t left;
};

static uint8_t take8(struct reader *r)
{
	if (!r->left)
		return 0;
	r->left--;
	return *r->p++;
}

static uint64_t take64(struct reader *r)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | take8(r);
	return v;
}

/* A short string from the input (printable or not: the parser must cope). */
static void take_string(struct reader *r, char *out, size_t len)
{
	size_t n = take8(r) % len;

	for (size_t i = 0; i < n; i++) {
		char c = (char)take8(r);

		/* D-Bus strings are UTF-8 without NUL; sd-bus refuses others when appending. */
		out[i] = c ? (char)(c & 0x7f) : 'x';
		if (!out[i])
			out[i] = 'x';
	}
	out[n] = '\0';
}

static sd_bus *fuzz_bus(void)
{
	static sd_bus *bus;
	int sv[2];

	/* An unstarted peer connection is enough to build and parse messages. */
	if (!bus && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		sd_bus_new(&bus);
		sd_bus_set_fd(bus, sv[0], sv[0]);
		sd_bus_set_anonymous(bus, 1);
		sd_bus_start(bus);
	}
	return bus;
}

int fuzz_dict_message(const uint8_t *data, size_t size, sd_bus_message **ret)
{
	struct reader rd = {data, size};
	sd_bus_message *m = NULL;
	unsigned entries;
	int r;

	r = sd_bus_message_new_method_call(fuzz_bus(), &m, "org.dmabroker.Broker1",
					   "/org/dmabroker/Broker1", "org.dmabroker.Broker1", "X");
	if (r < 0)
		return r;
	r = sd_bus_message_open_container(m, 'a', "{sv}");
	entries = take8(&rd) % 40;
	for (unsigned i = 0; r >= 0 && i < entries && rd.left; i++) {
		uint8_t k = take8(&rd), t = take8(&rd);
		char key[32], s[64];

		if (k % 4 == 3)
			take_string(&rd, key, sizeof(key));
		else
			snprintf(key, sizeof(key), "%s",
				 keys[k % (sizeof(keys) / sizeof(keys[0]))]);
		switch (t % 7) {
		case 0:
			take_string(&rd, s, sizeof(s));
			r = sd_bus_message_append(m, "{sv}", key, "s", s);
			break;
		case 1:
			r = sd_bus_message_append(m, "{sv}", key, "b", (int)(take8(&rd) & 1));
			break;
		case 2:
			r = sd_bus_message_append(m, "{sv}", key, "u", (uint32_t)take64(&rd));
			break;
		case 3:
			r = sd_bus_message_append(m, "{sv}", key, "t", take64(&rd));
			break;
		case 4: {
			uint32_t v[8];
			unsigned n = take8(&rd) % 8;

			for (unsigned j = 0; j < n; j++)
				v[j] = (uint32_t)take64(&rd);
			r = db_dict_append_u32_array(m, key, v, n);
			break;
		}
		case 5:
			take_string(&rd, s, sizeof(s));
			r = sd_bus_message_append(m, "{sv}", key, "as", 2, s,
						  "/dev/dri/renderD128");
			break;
		default:
			r = sd_bus_message_append(m, "{sv}", key, "y", take8(&rd));
			break;
		}
	}
	if (r >= 0)
		r = sd_bus_message_close_container(m);
	if (r >= 0)
		r = sd_bus_message_seal(m, 1, 0);
	if (r >= 0)
		r = sd_bus_message_rewind(m, 1);
	if (r < 0) {
		sd_bus_message_unref(m);
		return r;
	}
	*ret = m;
	return 0;
}
