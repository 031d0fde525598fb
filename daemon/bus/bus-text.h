/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Client text off the bus: every string argument passes common/text.h's check before a
 * handler sees it, and a string that fails is InvalidArgument with a message naming the
 * argument and saying what is wrong and where, never echoing the bytes. bus-dict.c reads the
 * strings inside a{sv} arguments through db_bus_check_text; a string or object path that is
 * an argument of its own is read with db_bus_read_text or db_bus_read_path.
 */

#include <stddef.h>
#include <systemd/sd-bus.h>

#include "text.h"

/* The longest object path a client names (the daemon's own are under 64 bytes). */
#define DB_BUS_PATH_MAX DB_TEXT_MAX

/*
 * Checks s, the argument what (or the key of the a{sv} argument what, if key is not NULL):
 * at most max bytes (0: DB_TEXT_MAX), with flags as db_text_check takes them. 0, or
 * InvalidArgument set in error and its negative errno.
 */
int db_bus_check_text(const char *what, const char *key, const char *s, size_t max, unsigned flags,
		      sd_bus_error *error);

/* Reads a string argument and checks it. *ret points into the message. */
int db_bus_read_text(sd_bus_message *m, const char *what, size_t max, unsigned flags,
		     const char **ret, sd_bus_error *error);

/* Reads an object path argument, at most DB_BUS_PATH_MAX bytes (sd-bus checks the syntax:
 * only [A-Za-z0-9_/]). *ret points into the message. */
int db_bus_read_path(sd_bus_message *m, const char *what, const char **ret, sd_bus_error *error);
