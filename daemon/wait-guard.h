/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>

/*
 * The daemon never waits for anyone once it serves. A build with -Dwait_guard=true wraps
 * every blocking sd-bus entry point (-Wl,--wrap) and aborts when one is called while
 * serving, so that a handler, timer or callback that would wait on the bus or a client
 * fails the test that reaches it; the test command runs that build. Elsewhere this only
 * keeps the flag.
 */
void db_wait_guard_set_serving(bool serving);
bool db_wait_guard_serving(void);
