#!/usr/bin/env bash
# Screenshots the live page (`--serve`) of a render in progress into docs/live-page.png with
# headless Chromium: tubingen × starry night, 512 px, 2 scales, RANDOM VGG19 weights, CPU.
#   docs/make_live_page.sh          (needs chromium: apt-get install chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
HS=${HIRESNST:-hiresnst}
IMG=tests/fixtures/images
WORK=$(mktemp -d)
PORT=${PORT:-8765}
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$HS" render "$IMG/tubingen.jpg" "$IMG/starry_night.jpg" -o "$WORK/tubingen.png" --size 512 \
  --scales 2 --steps 60 --weights random --init content --save-every 20 --log-every 10 \
  --serve "$PORT" 2>"$WORK/log" &
PID=$!
# Wait for the second level's 20th step, so the page has a curve and a fine-level snapshot.
until grep -q "level 2/2 .* step 20/60" "$WORK/log"; do
  kill -0 "$PID" 2>/dev/null || { cat "$WORK/log"; exit 1; }
  sleep 1
done
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size=1280,760 --virtual-time-budget=4000 --user-data-dir="$WORK/profile" \
  --screenshot=docs/live-page.png "http://127.0.0.1:$PORT/"
echo "wrote docs/live-page.png"
