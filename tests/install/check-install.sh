#!/bin/sh
# Installs the build into a temporary DESTDIR and checks every file lands
# where Debian expects it. Usage: check-install.sh BUILD_DIR PREFIX LIBEXECDIR USERUNITDIR COMPLETIONSDIR
set -eu
build=$1 prefix=$2 libexecdir=$3 userunitdir=$4 completionsdir=$5
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
