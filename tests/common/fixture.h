/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

/*
 * A private dbus-daemon and a dmabrokerd on it, started from the build tree. The daemon runs
 * under $DMABROKER_TEST_WRAPPER when set (e.g. "valgrind --error-exitcode=99 ..."), and the
 * fixture fails the test if it does not exit cleanly on SIGTERM (sanitizer or valgrind reports
 * make that exit status non-zero).
 */
struct fixture {
	char dir[256]; /* private temporary directory (bus socket, config) */
	char address[512]; /* the bus address */
	pid_t bus_pid;
	pid_t daemon_pid;
	char config[300]; /* the daemon's config file */
};

/* Extra <limit> elements for the bus configuration (benchmarks with many clients), or NULL. */
extern const char *fixture_bus_limits;

/* Extra daemon arguments (e.g. "--fd-store"), NULL-terminated, or NULL. */
extern const char *const *fixture_daemon_args;
/* Run in the daemon's process just before exec (to pass fds or environment), or NULL. */
extern void (*fixture_daemon_setup)(void);

/*
 * Runs the test itself under $DMABROKER_TEST_CLIENT_WRAPPER when set (meson test --setup
 * valgrind: the library is checked in the test's process as the daemon is in its own).
 * Call first in main(); returns only when there is nothing to wrap (or already wrapped).
 */
void fixture_wrap_self(char **argv);

/* Writes config_text (may be NULL) as the daemon's config and starts bus and daemon. */
int fixture_start(struct fixture *f, const char *config_text);

/* Replaces the config file (for reload tests). */
int fixture_write_config(struct fixture *f, const char *config_text);

/* Starts the daemon again on the same bus (after fixture_kill_daemon) and waits for it. */
int fixture_restart_daemon(struct fixture *f);

/* Sends sig to the daemon and reaps it; returns its wait status, or -1. */
int fixture_kill_daemon(struct fixture *f, int sig);

/* Stops the daemon with SIGTERM; returns its exit status (0 when clean), or -1. */
int fixture_stop_daemon(struct fixture *f);

/* Stops everything and removes the directory. Returns the daemon's exit status. */
int fixture_stop(struct fixture *f);

/* The daemon's open fd count. */
int fixture_daemon_fds(struct fixture *f);

/* Path of a binary built beside the test (from $DMABROKER_BUILD_ROOT). */
const char *fixture_build_path(const char *relative, char *out, size_t len);

/* Waits until the daemon's NClients equals n (it drops clients asynchronously). */
bool fixture_wait_clients(struct fixture *f, unsigned n, int timeout_ms);
