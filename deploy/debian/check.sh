#!/usr/bin/env bash
# Checks the Debian package: its metadata and contents with dpkg-deb, then a real `dpkg -i`
# into a temporary root (its postinst run there, through DPKG_ROOT), and what that left.
set -euo pipefail
deb="$1"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

dpkg-deb --info "$deb"
contents="$(dpkg-deb --contents "$deb")"
for path in ./usr/bin/switchhook ./lib/systemd/system/switchhook.service \
    ./etc/switchhook/switchhook.toml ./usr/share/man/man1/switchhook.1.gz \
    ./usr/share/doc/switchhook/copyright ./usr/share/doc/switchhook/switchhook.example.toml \
    ./usr/share/bash-completion/completions/switchhook; do
    grep -q " $path\$" <<<"$contents" || { echo "missing from the package: $path"; exit 1; }
done
dpkg-deb --field "$deb" Conffiles | grep -qx '/etc/switchhook/switchhook.toml' \
    || dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx '/etc/switchhook/switchhook.toml'

# An empty root with a dpkg database and the account files useradd writes to.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/etc/passwd" "$root/etc/group" "$root/etc/shadow" "$root/etc/gshadow"
dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null -i "$deb"

dpkg --root="$root" -s switchhook | grep -q '^Status: install ok installed'
"$root/usr/bin/switchhook" --version
grep -q '^ExecStart=/usr/bin/switchhook run --config /etc/switchhook/switchhook.toml' \
    "$root/lib/systemd/system/switchhook.service"
grep -q '^switchhook:' "$root/etc/passwd"
gid="$(awk -F: '$1 == "switchhook" { print $3 }' "$root/etc/group")"
[ "$(stat -c '%a %g' "$root/etc/switchhook")" = "750 $gid" ]
[ "$(stat -c '%a %g' "$root/etc/switchhook/secrets.env")" = "640 $gid" ]
"$root/usr/bin/switchhook" check-config "$root/etc/switchhook/switchhook.toml"
echo "package ok: installed into a temporary root"
