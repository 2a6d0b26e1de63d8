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
mkdir -p "$dest/_dl"
source "$(dirname "$0")/private_deb_src.sh"
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
