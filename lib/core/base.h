/* base.h - included first by every titan source file: the common system
 * headers, the error API, and then banned.h, which must come after the
 * system headers it guards against. */
#ifndef TITAN_CORE_BASE_H
#define TITAN_CORE_BASE_H

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TITAN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TITAN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define TITAN_VERSION "0.1.0"

#include "core/banned.h"
#endif
