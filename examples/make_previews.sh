#!/usr/bin/env bash
# Renders the README's preview images (random VGG19 weights, CPU) into examples/previews/ and
# each render's --json line into examples/previews/renders.jsonl (times, losses, settings).
#   examples/make_previews.sh [controls|fast|pyramid ...]   (default: all three)
# 'fast' needs Magenta's networks: pip install '.[fast]' && hiresnst weights import --magenta
set -euo pipefail
cd "$(dirname "$0")/.."
IMG=../shared/images
OUT=examples/previews
HS=${HIRESNST:-hiresnst}
mkdir -p "$OUT"
LOG="$OUT/renders.jsonl"

render() {  # NAME CONTENT STYLES... -- OPTIONS...
  local name=$1; shift
  local args=()
  while [ "$1" != "--" ]; do args+=("$1"); shift; done; shift
  "$HS" render "${args[@]}" -o "$OUT/$name.png" --weights random -q --json "$@" \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['preview']='$name'; print(json.dumps(d))" >> "$LOG"
  python3 - "$OUT/$name.png" <<'PY'
import sys
from pathlib import Path
from PIL import Image
p = Path(sys.argv[1])
Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), quality=85)
p.unlink()
PY
  echo "rendered $name"
}

controls() {
  local C=(--size 256 --steps 60 --init content)
  render gram "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- "${C[@]}"
  render luminance "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- "${C[@]}" --preserve-colors luminance
  render blend "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" "$IMG/the_scream.jpg" -- "${C[@]}" --style-blend 0.5,0.5
  python3 -c "
from PIL import Image
m = Image.new('L', (1024, 768), 0)
m.paste(255, (0, 0, 512, 768))
m.save('$OUT/left-half.png')
m.point(lambda v: 255 - v).save('$OUT/right-half.png')"
  render masks "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" "$IMG/the_scream.jpg" -- "${C[@]}" \
    --style-mask "0:$OUT/left-half.png" --style-mask "1:$OUT/right-half.png"
  render mrf "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- "${C[@]}" --style-loss mrf
  render gram-mrf "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- "${C[@]}" --style-loss gram+mrf
}

fast() {
  render fast "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- --size 256 --method fast
  render from-content "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- --size 256 --steps 40 --init content
  render from-fast "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- --size 256 --steps 40 --init fast
  render fast-1024 "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- --size 1024 --method fast
  rm "$OUT/fast-1024.jpg"  # for its time only
}

pyramid() {
  render pyramid-1024 "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -- --size 1024 --scales 3 --steps 50 --init content
  python3 -c "
from PIL import Image
im = Image.open('$OUT/pyramid-1024.jpg')
im.resize((512, 384), Image.LANCZOS).save('$OUT/pyramid-1024.jpg', quality=82)"  # 1024 px shown at 512
}

for part in "${@:-controls fast pyramid}"; do
  for p in $part; do "$p"; done
done
