/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Every string a client supplies, as the contract (data/org.dmabroker.Broker1.xml) has them,
 * and where the daemon checks each with the one text check (common/text.h) before anything
 * stores it. tests/unit/test-text-contract fails when the contract has a string this table
 * lacks (or the table one the contract lost); tests/bus/test-text sends hostile text in every
 * row and expects InvalidArgument.
 */

#include <stddef.h>

struct text_arg {
	const char *method;
	const char *arg; /* the in-argument's name in the contract */
	/* For a string inside an a{sv}: its key. For type "a{sv}": NULL, the keys themselves. */
	const char *key;
	const char *type; /* "s", "as", "o" or "a{sv}" */
	const char *checked_by;
};

#define DICT "db_dict_read (daemon/bus/bus-dict.c)"
#define TEXT "db_bus_read_text (daemon/bus/bus-text.c)"
#define PATH "db_bus_read_path (daemon/bus/bus-text.c)"

static const struct text_arg text_args[] = {
	{"Register", "info", NULL, "a{sv}", DICT},
	{"Register", "info", "role", "s", DICT},
	{"Register", "info", "name", "s", DICT},
	{"Register", "info", "devices", "as", DICT},
	{"Allocate", "spec", NULL, "a{sv}", DICT},
	{"Allocate", "spec", "backend", "s", DICT},
	{"Allocate", "spec", "name", "s", DICT},
	{"AllocateWithMemfd", "spec", NULL, "a{sv}", DICT},
	{"AllocateWithMemfd", "spec", "backend", "s", DICT},
	{"AllocateWithMemfd", "spec", "name", "s", DICT},
	{"AllocateMany", "spec", NULL, "a{sv}", DICT},
	{"AllocateMany", "spec", "backend", "s", DICT},
	{"AllocateMany", "spec", "name", "s", DICT},
	{"Export", "info", NULL, "a{sv}", DICT},
	{"Export", "info", "name", "s", DICT},
	{"Share", "buffer", NULL, "o", PATH},
	{"Share", "options", NULL, "a{sv}", DICT},
	{"Release", "buffer", NULL, "o", PATH},
	{"Reacquire", "buffer", NULL, "o", PATH},
	{"Move", "buffer", NULL, "o", PATH},
	{"Revoke", "buffer", NULL, "o", PATH},
	{"Revoke", "reason", NULL, "s", TEXT},
	{"Subscribe", "options", NULL, "a{sv}", DICT},
	{"CreateCollection", "options", NULL, "a{sv}", DICT},
	{"CreateCollection", "options", "name", "s", DICT},
	{"CreateCollectionToken", "collection", NULL, "o", PATH},
	{"SetCollectionConstraints", "collection", NULL, "o", PATH},
	{"SetCollectionConstraints", "constraints", NULL, "a{sv}", DICT},
	{"SetCollectionConstraints", "constraints", "device", "s", DICT},
	{"SetCollectionConstraints", "constraints", "backends", "as", DICT},
	{"CommitCollection", "collection", NULL, "o", PATH},
	{"WaitCollection", "collection", NULL, "o", PATH},
	{"GetCollectionBuffers", "collection", NULL, "o", PATH},
	{"LeaveCollection", "collection", NULL, "o", PATH},
	{"CreateStream", "collection", NULL, "o", PATH},
	{"CreateStream", "options", NULL, "a{sv}", DICT},
	{"CreateStream", "options", "name", "s", DICT},
	{"CreateStream", "options", "mode", "s", DICT},
	{"CreateStreamToken", "stream", NULL, "o", PATH},
	{"JoinStream", "name", NULL, "s", TEXT},
	{"JoinStream", "options", NULL, "a{sv}", DICT},
	{"JoinStream", "options", "label", "s", DICT},
	/* The contract names "mode" beside JoinStream's options (it is in the answer's
	 * format): as an option it is an unknown key, which the dictionary refuses. */
	{"JoinStream", "options", "mode", "s", DICT},
	{"JoinStreamWithToken", "options", NULL, "a{sv}", DICT},
	{"LeaveStream", "stream", NULL, "o", PATH},
	{"EndStream", "stream", NULL, "o", PATH},
	{"EndStream", "reason", NULL, "s", TEXT},
	{"EndStreamLink", "stream", NULL, "o", PATH},
	{"EndStreamLink", "reason", NULL, "s", TEXT},
	{"TakeStreamLink", "stream", NULL, "o", PATH},
};

#undef DICT
#undef TEXT
#undef PATH
