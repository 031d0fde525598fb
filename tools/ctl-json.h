/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdio.h>
#include <systemd/sd-bus.h>

/* Writes s as a JSON string (quoted; control characters, quotes and backslashes escaped). */
void json_string(FILE *f, const char *s);

/*
 * Writes the next complete value of m as JSON: numbers and booleans as such, strings and
 * object paths as strings, arrays as arrays, a{s...} dictionaries as objects, structs as
 * arrays, variants as their contents. -EBADMSG for what the message does not hold.
 */
int json_value(FILE *f, sd_bus_message *m);
