#!/usr/bin/env bash
# Make the git-ignored third_party/SoulX-FlashTalk/ (the released code, for `soulx-live bench
# --compare-reference` and tests/engine/test_release_dry_run.py) from a local git mirror of
# https://github.com/Soul-AILab/SoulX-FlashTalk. No network: it only reads the mirror.
#   bash scripts/make_release_copy.sh [MIRROR_GIT_DIR] [COMMIT]
# MIRROR_GIT_DIR defaults to /work/.mirror/Soul-AILab+SoulX-FlashTalk/repo; COMMIT to the mirror's HEAD.
# Files whose objects the mirror lacks (large binaries, e.g. the paper PDF) are left out and named.
# The copy is never committed: the script refuses to write it unless git ignores third_party/.
set -euo pipefail
cd "$(dirname "$0")/.."

MIRROR="${1:-/work/.mirror/Soul-AILab+SoulX-FlashTalk/repo}"
COMMIT="${2:-HEAD}"
DEST="third_party/SoulX-FlashTalk"

if ! git -C "$MIRROR" rev-parse --verify -q "$COMMIT^{commit}" >/dev/null; then
  echo "make_release_copy: no git repository with commit $COMMIT at $MIRROR" >&2
  exit 2
fi
if ! git check-ignore -q "$DEST"; then
  echo "make_release_copy: $DEST is not git-ignored; add /third_party/ to .gitignore first" >&2
  exit 2
fi

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
present=()
while IFS=$'\t' read -r meta path; do
  sha="${meta##* }"
  if git -C "$MIRROR" cat-file -e "$sha" 2>/dev/null; then
    present+=("$path")
  else
    echo "make_release_copy: left out (object not in the mirror): $path" >&2
  fi
done < <(git -C "$MIRROR" ls-tree -r "$COMMIT")
# archive reads the whole tree and warns again about the absent objects named above; pipefail keeps failures.
git -C "$MIRROR" archive "$COMMIT" -- "${present[@]}" 2>/dev/null | tar -x -C "$DEST.tmp"
git -C "$MIRROR" rev-parse "$COMMIT" > "$DEST.tmp/RELEASE_COMMIT"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "make_release_copy: $DEST at $(cat "$DEST/RELEASE_COMMIT") (${#present[@]} files)"
