# Sourced by the fetch scripts: a private deb-src list for Debian 12 main, through the mirror this
# machine already uses (its deb822 "URIs:" line), without touching the machine's apt configuration.
# Defines APTOPTS (pass it to apt-get), runs `apt-get update` with it, and makes sure dpkg-source exists.
apt_dir=$(mktemp -d)
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial"
mirror=$(grep -rhE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v snapshot | awk '{print $2}' | head -n1 || true)
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt/sources.list.d/*.sources" >&2; exit 1; }
cat > "$apt_dir/sources.list.d/src.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
APTOPTS=(-o "Dir::Etc::SourceParts=$apt_dir/sources.list.d" -o Dir::Etc::SourceList=/dev/null -o "Dir::State::Lists=$apt_dir/lists")
apt-get "${APTOPTS[@]}" update
command -v dpkg-source >/dev/null || apt-get install -y dpkg-dev
