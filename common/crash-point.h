/* SPDX-License-Identifier: MIT */
/* common/crash-point.h: named places where a test build can be made to die.
 *
 * Built with -Dcrash_points=true (tests only), crash_point("NAME") kills the
 * process with SIGKILL, as a power cut or the OOM killer would, at the Nth
 * pass through NAME when $TOKEND_CRASH_POINT is "NAME" (N = 1) or "NAME:N".
 * tests/crash/ uses this to stop the daemon at each step of a rotating
 * refresh. In every other build a crash point is nothing at all. */
#pragma once

#if ENABLE_CRASH_POINTS
void crash_point(const char *name);
#else
static inline void crash_point(const char *name) {
        (void) name;
}
#endif
