/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

/*
 * Turns fuzz bytes into a sealed, readable message holding one a{sv} dictionary, as a client
 * would send it: the bytes pick keys (the ones the parsers know, and others), the variant's
 * type (right or wrong), and the values. The daemon's parsers then read it as they read a
 * client's call.
 */
int fuzz_dict_message(const uint8_t *data, size_t size, sd_bus_message **ret);
