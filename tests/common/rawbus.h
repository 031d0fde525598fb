/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * A hand-rolled D-Bus client for hostile tests: it can send what no well-behaved library
 * would, such as a unix-fd index past the descriptors the message carries.
 */
struct rawbus {
	int fd;
	uint32_t serial;
	char unique_name[64];
};

/* Connects to a unix:path= address, authenticates (EXTERNAL, fd passing) and says Hello. */
int rawbus_connect(struct rawbus *rb, const char *address);
void rawbus_close(struct rawbus *rb);

/* Speaks on a peer socket (from OpenPeer, taken): ANONYMOUS auth, no Hello, no bus daemon in
 * between, so the daemon parses whatever is sent. */
int rawbus_connect_peer(struct rawbus *rb, int fd);

/* Like rawbus_call, for a peer connection (no destination). */
int rawbus_call_peer(struct rawbus *rb, const char *member, const char *sig, const void *body,
		     size_t body_len, uint32_t n_unix_fds, const int *fds, int n_fds);

/* Marshals a method call for a peer connection into out (iface may be NULL); returns the
 * serial and its length in *ret_len. */
int rawbus_build_peer_call(struct rawbus *rb, const char *iface, const char *member,
			   const char *sig, const void *body, size_t body_len, void *out,
			   size_t out_len, size_t *ret_len);

/*
 * Sends a method call to the broker whose body is body (already marshalled for signature
 * sig), claiming n_unix_fds descriptors in the header while attaching the fds given (which
 * may be fewer). Returns the serial.
 */
int rawbus_call(struct rawbus *rb, const char *member, const char *sig, const void *body,
		size_t body_len, uint32_t n_unix_fds, const int *fds, int n_fds);

/*
 * Waits for the reply to serial: 1 and the error name in err for an error, 0 for a method
 * return, -ECONNRESET if the bus dropped us, -ETIMEDOUT.
 */
int rawbus_wait_reply(struct rawbus *rb, uint32_t serial, char *err, size_t len, int timeout_ms);

/* Like rawbus_wait_reply, for whichever reply comes next when *serial is 0 (set to the
 * serial it answers). */
int rawbus_next_reply(struct rawbus *rb, uint32_t *serial, char *err, size_t len, int timeout_ms);
