/*
 * fuzz.h - what the libFuzzer targets share: the entry point libFuzzer
 * calls, and REQUIRE, a check of an invariant that aborts when it fails
 * (libFuzzer then keeps the input as a crash).
 */
#ifndef DSSFS_FUZZ_H
#define DSSFS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                                        \
	do {                                                                                 \
		if (!(cond)) {                                                               \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, \
				#cond);                                                      \
			abort();                                                             \
		}                                                                            \
	} while (0)

#endif
