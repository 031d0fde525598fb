// SPDX-License-Identifier: MIT
/*
 * Runs a command with a private bus and a daemon from the build tree, reachable through
 * $DMABROKER_BUS_ADDRESS: so that programs written as users would write them (the
 * documentation's snippets) run against a real daemon. Exits with the command's status, or 1
 * if the daemon did not stop cleanly.
 *   with-daemon COMMAND [ARG...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"
#include "protocol.h"

int main(int argc, char **argv)
{
	struct fixture f;
	int status = 0, stopped;
	pid_t pid;

	if (argc < 2) {
		fprintf(stderr, "usage: with-daemon COMMAND [ARG...]\n");
		return 2;
	}
	if (fixture_start(&f, NULL) < 0) {
		fprintf(stderr, "with-daemon: could not start a bus and the daemon\n");
		return 1;
	}
	setenv(DB_ENV_BUS_ADDRESS, f.address, 1);
	pid = fork();
	if (pid == 0) {
		execvp(argv[1], argv + 1);
		perror("with-daemon: exec");
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		status = 1 << 8;
	stopped = fixture_stop(&f);
	if (stopped != 0) {
		fprintf(stderr, "with-daemon: the daemon did not exit cleanly (%d)\n", stopped);
		return 1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
