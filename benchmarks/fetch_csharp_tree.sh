#!/usr/bin/env bash
# Fetch C# source trees (an unseen language for pre-training, paper §4.4 / Table 6) as Debian
# source packages, through a private deb-src list: the machine's apt configuration is untouched.
# Each package becomes one top-level folder, so `codebert corpus extract --repo-unit top` splits
# train/valid/test by package.
#
#     bash benchmarks/fetch_csharp_tree.sh /work/csharp-tree
#     codebert corpus extract /work/csharp-tree --languages csharp --out runs/csharp-corpus
set -euo pipefail
dest=${1:-/work/csharp-tree}
apt_dir=$(mktemp -d)
mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$dest/_dl"
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
cd "$dest/_dl"
# C# libraries and programs of Debian 12 main (source packages that build with Mono), most with
# documentation comments (///). A package whose files the registry does not serve is skipped.
packages=(nunit newtonsoft-json keepass2 dbus-sharp opentk dafny gdata-sharp db4o nrefactory taoframework
          boogie hexbox de4dot dnlib openmcdf hyena cecil mono-zeroconf xsddiagram widemargin gtk-sharp2
          gnome-subtitles bless yahtzeesharp sublib mono-fuse mono-tools taglib-sharp mono-addins nini)
for p in "${packages[@]}"; do
  apt-get "${APTOPTS[@]}" source --download-only "$p" || echo "skipped $p (not in bookworm main)"
done
for d in *.dsc; do
  dpkg-source --no-check -x "$d" "../$(basename "$d" .dsc | sed 's/_.*//')" || echo "could not unpack $d"
done
rm -f ../*.orig.tar.* ../*.debian.tar.* ../*.dsc
cd "$dest"
find . -name .pc -type d -prune -exec rm -rf {} +
rm -rf _dl
echo "C# tree ready in $dest: $(find . -name '*.cs' | wc -l) .cs files in $(ls | wc -l) packages"
