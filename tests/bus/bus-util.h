/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

/* Helpers for the bus tests: other processes, and reading the daemon's objects. */

/* Runs argv (argv[0] relative to the build root, or a command), capturing its stdout.
 * With as_nobody, runs it through setpriv as uid/gid 65534. Returns its exit status. */
int run_client(const char *const *argv, bool as_nobody, char *out, size_t len);

/* Starts argv with a pipe for its stdout (*ret_out) and stdin (*ret_in); waits for a first
 * line, copied to line. Returns the pid. */
pid_t start_client(const char *const *argv, int *ret_out, int *ret_in, char *line, size_t len);

/* Starts argv (as uid 65534 with as_nobody) with its stdout on a pipe (*ret_out); does not
 * wait. Returns the pid. */
pid_t spawn_client(const char *const *argv, bool as_nobody, int *ret_out);

/* Reads what fd has until it stays quiet for quiet_ms (or len - 1 bytes); NUL-terminates. */
void read_until_quiet(int fd, char *out, size_t len, int quiet_ms);

/* Calls an org.dmabroker.Broker1 method with arguments of types (NULL: none), waiting at most
 * 5 s: 0, or a negative errno with *error set when the daemon answered with one. */
int broker_callv(sd_bus *bus, const char *member, sd_bus_error *error, sd_bus_message **reply,
		 const char *types, va_list ap);
int broker_call(sd_bus *bus, const char *member, sd_bus_error *error, sd_bus_message **reply,
		const char *types, ...);

/* A plain bus connection to $DMABROKER_BUS_ADDRESS, for inspecting the daemon. */
sd_bus *inspect_bus(void);

/* Live dma-bufs in the kernel (debugfs bufinfo's "Total N objects"), or -1 without debugfs. */
int debugfs_dmabuf_objects(void);

bool buffer_pinned(sd_bus *bus, const char *buffer_path);
/* Number of attachments of a buffer, or -1 if it does not exist. */
int buffer_attachments(sd_bus *bus, const char *buffer_path);
uint32_t broker_u32(sd_bus *bus, const char *property);

/* This process's end of the library's peer connection (a connected AF_UNIX socket with no
 * address: a socket pair's), or -1. */
int find_peer_socket(void);
