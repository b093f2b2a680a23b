#!/usr/bin/env bash
# Sets up the environment that scores bench/olmocr_bench.py's output with olmOCR-bench's own test classes.
#
#   bash scripts/olmocr_env.sh [VENV]        (VENV defaults to $OLMOCR_VENV, else .venv-olmocr in the repo root)
#
# - a separate virtual environment (never the project's .venv) with olmocr==0.4.27 installed --no-deps and only
#   what olmocr/bench/tests.py imports: fuzzysearch rapidfuzz beautifulsoup4 lxml numpy tqdm playwright;
# - Debian's chromium-headless-shell (apt), because playwright's own browser download needs the internet: math
#   tests render LaTeX with KaTeX in a headless browser;
# - the layout playwright looks for, under VENV/ms-playwright, pointing at Debian's binary, so that olmocr's
#   unchanged `p.chromium.launch()` finds it when PLAYWRIGHT_BROWSERS_PATH=VENV/ms-playwright
#   (bench/olmocr_bench.py sets that itself);
# - a check that the browser starts and KaTeX renders an equation.
# Running it again changes nothing that is already in place.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${OLMOCR_VENV:-$ROOT/.venv-olmocr}}"
PYTHON="${PYTHON:-python3}"
OLMOCR_VERSION="0.4.27"
CHROMIUM_BIN="/usr/lib/chromium/chromium-headless-shell"

case "$(cd "$(dirname "$VENV")" 2>/dev/null && pwd)/$(basename "$VENV")" in
"$ROOT/.venv") echo "olmocr_env.sh: refusing to touch the project's own .venv" >&2; exit 2 ;;
esac

# 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# keep git from listing the environment (as `python -m venv` does itself from Python 3.13 on)
[ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"

# 2. olmocr without its (GPU, cloud) dependencies, and what its bench test classes import
INSTALLED="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("olmocr"))' 2>/dev/null || true)"
if [ "$INSTALLED" != "$OLMOCR_VERSION" ]; then
    echo "== installing olmocr==$OLMOCR_VERSION (--no-deps)"
    "$VENV/bin/python" -m pip install --quiet --no-deps "olmocr==$OLMOCR_VERSION"
fi
if ! "$VENV/bin/python" -c "import fuzzysearch, rapidfuzz, bs4, lxml, numpy, tqdm, playwright" 2>/dev/null; then
    echo "== installing fuzzysearch rapidfuzz beautifulsoup4 lxml numpy tqdm playwright"
    "$VENV/bin/python" -m pip install --quiet fuzzysearch rapidfuzz beautifulsoup4 lxml numpy tqdm playwright
fi

# 3. Debian's headless Chromium
if [ ! -x "$CHROMIUM_BIN" ]; then
    echo "== installing Debian's chromium-headless-shell"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "olmocr_env.sh: need root (or sudo) for apt-get" >&2; exit 1; }
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium-headless-shell
fi
[ -x "$CHROMIUM_BIN" ] || { echo "olmocr_env.sh: $CHROMIUM_BIN missing after install" >&2; exit 1; }

# 4. where playwright looks for its headless shell: ms-playwright/chromium_headless_shell-<revision>/
#    chrome-headless-shell-linux64/chrome-headless-shell, with <revision> from the installed playwright's
#    browsers.json (a symlink; Chromium finds its .pak files next to the resolved binary)
REVISION="$("$VENV/bin/python" - <<'EOF'
import json, pathlib, playwright
spec = pathlib.Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
print(next(b["revision"] for b in json.loads(spec.read_text())["browsers"] if b["name"] == "chromium-headless-shell"))
EOF
)"
SHELL_DIR="$VENV/ms-playwright/chromium_headless_shell-$REVISION"
mkdir -p "$SHELL_DIR/chrome-headless-shell-linux64"
ln -sfn "$CHROMIUM_BIN" "$SHELL_DIR/chrome-headless-shell-linux64/chrome-headless-shell"
touch "$SHELL_DIR/INSTALLATION_COMPLETE"

# 5. the browser starts and olmocr's KaTeX renderer works (its own code, unchanged, no cache)
echo "== checking that olmocr's KaTeX render starts the browser"
PLAYWRIGHT_BROWSERS_PATH="$VENV/ms-playwright" timeout 120 "$VENV/bin/python" - <<'EOF'
import os, tempfile
from olmocr.bench.katex import render
render.equation_cache = render.EquationCache(os.path.join(tempfile.mkdtemp(), "cache.db"))
eq = render.render_equation("a^{2} + 8 = 12", use_cache=False)
assert eq is not None and eq.error is None and "<math" in eq.mathml, eq
print(f"ok: KaTeX rendered {len(eq.spans)} spans with {os.environ['PLAYWRIGHT_BROWSERS_PATH']}", flush=True)
os._exit(0)  # olmocr keeps one browser per render thread: leave without waiting on it
EOF
echo "olmocr scoring environment ready: $VENV/bin/python"
