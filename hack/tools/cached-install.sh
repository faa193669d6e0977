#!/usr/bin/env bash
# Builds Go programs with `go install` once per machine and links them into a bin
# directory. The build lands in a per-user cache keyed by everything that decides
# its output, so a new clone of the repository costs seconds, and a change of
# version builds afresh.
#
# usage: cached-install.sh -n NAME -b BIN_DIR [-m MODULE_DIR] [-r FROM:TO]... -- GO_INSTALL_ARGS...
#   -n NAME        names the cache entry (also part of its key)
#   -b BIN_DIR     where the programs are linked
#   -m MODULE_DIR  run `go install` there, so its go.mod and go.sum pin the
#                  versions (they are hashed into the key); without it the
#                  arguments must be pkg@version
#   -r FROM:TO     rename a built program (go names a binary after its package
#                  directory: etcd's is "server")
#
# The cache is ${XDG_CACHE_HOME:-$HOME/.cache}/runnerpool-operator/tools, or
# $RUNNERPOOL_TOOLS_CACHE. An entry is complete when it holds the .complete stamp;
# it is built in a temporary directory beside it and renamed into place, so an
# interrupted build never leaves a half entry behind.
set -euo pipefail

name="" bin_dir="" module_dir=""
renames=()
while getopts "n:b:m:r:" opt; do
  case "$opt" in
    n) name=$OPTARG ;;
    b) bin_dir=$OPTARG ;;
    m) module_dir=$OPTARG ;;
    r) renames+=("$OPTARG") ;;
    *) echo "usage: $0 -n NAME -b BIN_DIR [-m MODULE_DIR] [-r FROM:TO]... -- GO_INSTALL_ARGS..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [[ -z $name || -z $bin_dir || $# -eq 0 ]]; then
  echo "$0: -n, -b and go install arguments are required" >&2
  exit 2
fi

GO=${GO:-go}
cache_root=${RUNNERPOOL_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/runnerpool-operator/tools}

key=$(
  {
    echo "$name"
    printf '%s\n' "$@" "${renames[@]}"
    "$GO" env GOOS GOARCH
    if [[ -n $module_dir ]]; then cat "$module_dir/go.mod" "$module_dir/go.sum"; fi
  } | sha256sum | cut -c1-16
)
entry="$cache_root/$name-$key"

if [[ ! -f $entry/.complete ]]; then
  mkdir -p "$cache_root"
  # Temporary directories of builds killed outright (no trap runs) are old.
  find "$cache_root" -maxdepth 1 -name '.tmp-*' -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
  tmp=$(mktemp -d "$cache_root/.tmp-$name-XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM HUP
  echo "building $name into $entry (once per machine; this can take minutes)" >&2
  start=$SECONDS
  (
    if [[ -n $module_dir ]]; then cd "$module_dir"; fi
    GOBIN="$tmp" GOWORK=off "$GO" install "$@"
  )
  for rename in "${renames[@]}"; do
    mv "$tmp/${rename%%:*}" "$tmp/${rename#*:}"
  done
  date -u +%Y-%m-%dT%H:%M:%SZ > "$tmp/.complete"
  # A stale, incomplete entry (made by hand, or by an older layout) is in the way.
  if [[ -d $entry && ! -f $entry/.complete ]]; then rm -rf "$entry"; fi
  # rename(2) is atomic; if a concurrent build won the race its entry stays.
  if ! mv -T "$tmp" "$entry" 2>/dev/null; then
    [[ -f $entry/.complete ]] || { echo "$0: cannot move $tmp to $entry" >&2; exit 1; }
  fi
  trap - EXIT INT TERM HUP
  rm -rf "$tmp"
  echo "built $name in $((SECONDS - start))s" >&2
fi

mkdir -p "$bin_dir"
for program in "$entry"/*; do
  ln -sfn "$program" "$bin_dir/$(basename "$program")"
done
