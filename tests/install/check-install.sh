#!/bin/sh
# Installs the build into a temporary DESTDIR and checks every file lands
# where Debian expects it, and that a client of libtokend builds against the
# installed header and library with pkg-config.
# Usage: check-install.sh BUILD_DIR PREFIX LIBEXECDIR USERUNITDIR COMPLETIONSDIR LIBDIR INCLUDEDIR SANITIZE
# (SANITIZE: the build's b_sanitize; a client of a sanitized library is built with the same.)
set -eu
build=$1 prefix=$2 libexecdir=$3 userunitdir=$4 completionsdir=$5 libdir=$6 includedir=$7 sanitize=${8:-none}
dest=$(mktemp -d /tmp/tokend-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null

fail=0
want() {
        if [ -e "$dest$1" ]; then echo "ok: $1"; else echo "MISSING: $1"; fail=1; fi
}
want "$prefix/bin/tokenctl"
want "$libexecdir/tokend"
want "$userunitdir/tokend.service"
want "$userunitdir/tokend.socket"
want "$prefix/share/varlink/io.tokend.agent.varlink"
want "$prefix/share/varlink/io.tokend.manager.varlink"
for p in github google microsoft gitlab oidc; do want "$prefix/share/tokend/providers/$p.json"; done
want "$prefix/share/man/man8/tokend.8"
want "$prefix/share/man/man1/tokenctl.1"
want "$prefix/share/man/man5/tokend.policy.5"
want "$completionsdir/tokenctl"
want "$libdir/libtokend.so.0"
want "$libdir/libtokend.so"
want "$libdir/pkgconfig/libtokend.pc"
want "$includedir/tokend.h"
want "$prefix/share/man/man3/libtokend.3"

# An agent builds and links against the installed library via pkg-config.
cat >"$dest/client.c" <<'EOF'
#include <tokend.h>
int main(void) {
        return tokend_strerror(TOKEND_ERR_NO_SUCH_CREDENTIAL) ? 0 : 1;
}
EOF
san=
[ "$sanitize" = none ] || san=-fsanitize=$sanitize
if flags=$(PKG_CONFIG_SYSROOT_DIR=$dest PKG_CONFIG_PATH=$dest$libdir/pkgconfig pkg-config --cflags --libs libtokend) &&
   ${CC:-cc} $san -o "$dest/client" "$dest/client.c" $flags && LD_LIBRARY_PATH=$dest$libdir "$dest/client"; then
        echo "ok: a client builds with pkg-config --cflags --libs libtokend and runs"
else
        echo "FAILED: building a client with pkg-config libtokend"; fail=1
fi
rm -f "$dest/client.c" "$dest/client"

# The unit starts the installed daemon.
if grep -qx "ExecStart=$libexecdir/tokend" "$dest$userunitdir/tokend.service"; then
        echo "ok: ExecStart=$libexecdir/tokend"
else
        echo "WRONG: ExecStart in tokend.service:"; grep ExecStart "$dest$userunitdir/tokend.service"; fail=1
fi
# Nothing lands outside the prefix but the unit and completion directories.
stray=$(cd "$dest" && find . -type f | sed 's|^\.||' | grep -v "^$prefix/" | grep -v "^$userunitdir/" | grep -v "^$completionsdir/" || true)
if [ -n "$stray" ]; then echo "STRAY: $stray"; fail=1; fi
exit $fail
