#!/usr/bin/env bash
# Fetch the mixed six-language source tree used by extract_throughput.py and compare_with_csn6.py:
# 18 real packages from PyPI (sdists), npm (tarballs) and Debian (source packages, and for Ruby the
# binary packages, which carry the gems' .rb files). Uses only the package registries, and a
# private deb-src list: the machine's apt configuration is not touched.
#
#     bash benchmarks/fetch_mixed_tree.sh /work/mixed-tree
set -euo pipefail
dest=${1:-/work/mixed-tree}
mkdir -p "$dest/_dl"
source "$(dirname "$0")/private_deb_src.sh"
cd "$dest/_dl"
for p in libcommons-io-java golang-github-spf13-cobra golang-github-pkg-errors golang-github-spf13-pflag \
         golang-logrus php-monolog php-twig php-league-commonmark; do
  apt-get "${APTOPTS[@]}" source --download-only "$p"
done
apt-get "${APTOPTS[@]}" source --download-only node-lodash || true  # extra tarballs fail; the main one arrives
apt-get download ruby-rack rake ruby-thor ruby-i18n
pip download --no-binary :all: --no-deps -d . requests click attrs
npm pack underscore express
for d in commons-io_*.dsc golang-*.dsc php-*.dsc; do
  dpkg-source --no-check -x "$d" "../$(basename "$d" .dsc | sed 's/_/-/; s/-[^-]*$//')"
done
cd "$dest"
rm -f ./*.orig.tar.*
tar xJf _dl/node-lodash_*.orig.tar.xz
for t in _dl/requests-*.tar.gz _dl/click-*.tar.gz _dl/attrs-*.tar.gz; do tar xzf "$t"; done
for t in _dl/*.tgz; do n=$(basename "$t" .tgz); mkdir -p "npm-$n" && tar xzf "$t" -C "npm-$n" --strip-components=1; done
for d in _dl/*_all.deb; do n=$(basename "$d" | sed 's/_.*//'); mkdir -p "deb-$n" && dpkg-deb -x "$d" "deb-$n"; done
find . -name .pc -type d -prune -exec rm -rf {} +
rm -rf _dl
echo "mixed tree ready in $dest"
