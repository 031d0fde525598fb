// SPDX-License-Identifier: MIT
/*
 * The peer wire as a hostile client drives it: whatever bytes arrive on a peer socket (the
 * handshake, D-Bus framing, declared sizes), fed through the wire into a real sd-bus
 * server, in pieces of the sizes the input chooses. The wire must close or carry on, never
 * read out of bounds, never wait, and never hand sd-bus more than MaxMessageSize.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>
#include <systemd/sd-id128.h>

#include "peer-wire.h"

struct target {
	sd_bus *bus;
	bool closed;
};

static int deliver(void *userdata)
{
	struct target *t = userdata;
	int r;

	do
		r = sd_bus_process(t->bus, NULL);
	while (r > 0);
	return r < 0 ? r : 0;
}

static int pump(void *userdata)
{
	struct target *t = userdata;
	uint64_t n = 0;

	if (sd_bus_get_n_queued_write(t->bus, &n) < 0 || n == 0)
		return 0;
	return sd_bus_process(t->bus, NULL) < 0 ? -EIO : 0;
}

static void closed(void *userdata, const char *reason)
{
	(void)reason;
	((struct target *)userdata)->closed = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct db_peer_wire_hooks hooks = {
		.deliver = deliver,
		.pump = pump,
		.closed = closed,
	};
	const struct db_peer_wire_limits limits = {
		.max_message_size = 4096,
		.window_bytes = 65536,
		.window_calls = 4,
		.auth_timeout_us = 1000000,
		.message_timeout_us = 1000000,
		.stall_timeout_us = 1000000,
	};
	struct target t = {0};
	struct db_peer_wire *w = NULL;
	sd_event *event = NULL;
	sd_id128_t id;
	int sv[2], bus_fd = -1;
	size_t off = 0;

	if (sd_event_new(&event) < 0)
		return 0;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		goto out;
	if (db_peer_wire_new(event, sv[0], &limits, &hooks, &t, &bus_fd, &w) < 0) {
		close(sv[1]);
		goto out;
	}
	sd_id128_randomize(&id);
	if (sd_bus_new(&t.bus) < 0 || sd_bus_set_fd(t.bus, bus_fd, bus_fd) < 0 ||
	    sd_bus_set_server(t.bus, 1, id) < 0 || sd_bus_set_anonymous(t.bus, 1) < 0 ||
	    sd_bus_negotiate_fds(t.bus, 1) < 0 || sd_bus_start(t.bus) < 0)
		goto out_wire;
	for (int i = 0; i < 8 && sd_bus_is_ready(t.bus) <= 0; i++)
		if (sd_bus_process(t.bus, NULL) < 0)
			goto out_wire;
	/* The first byte chooses the piece size: the wire must not care how bytes arrive. */
	while (off < size && !t.closed) {
		size_t piece = 1 + (size ? data[0] % 97 : 0);

		if (piece > size - off)
			piece = size - off;
		if (write(sv[1], data + off, piece) < 0)
			break;
		off += piece;
		for (int i = 0; i < 4 && !t.closed; i++)
			if (sd_event_run(event, 0) <= 0)
				break;
	}
	shutdown(sv[1], SHUT_WR);
	for (int i = 0; i < 16 && !t.closed; i++)
		if (sd_event_run(event, 0) <= 0)
			break;
out_wire:
	if (!t.closed)
		db_peer_wire_free(w);
	close(sv[1]);
	sd_bus_close_unref(t.bus);
out:
	sd_event_unref(event);
	return 0;
}
