/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

struct db_buffer;
struct db_client;

/* Object paths of buffers and clients: their ids, which are never reused. Pure formatting,
 * so that every layer can name an object without reaching into the D-Bus layer. */
const char *db_bus_buffer_path(const struct db_buffer *buf, char *out, size_t len);
const char *db_bus_client_path(const struct db_client *c, char *out, size_t len);
