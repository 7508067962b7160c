#!/usr/bin/env bash
# Runs the fuzz targets with cargo-fuzz (libFuzzer) on the stable toolchain.
#   fuzz/run.sh <target> <seconds>   one target, the longer documented run (e.g. 600 s)
#   fuzz/run.sh ci                   every target for 6 s (CI: 9 targets, under 60 s of fuzzing)
# Stable Rust is enough: with `-s none` (no sanitizer) cargo-fuzz passes only stable flags
# (sancov instrumentation through -Cpasses/-Cllvm-args). Address sanitizer would need nightly.
set -euo pipefail
cd "$(dirname "$0")"

# A debug build of the tool: it only drives cargo and libFuzzer, and builds in half the time.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --debug
TARGETS=(response_paygateglobal response_xsolla response_kolmisoft response_ccbill response_paysitecash
         webhook_paygateglobal webhook_xsolla config_parse api_command)
run() {
  local target=$1 seconds=$2
  mkdir -p "corpus/$target" "artifacts/$target"
  cargo fuzz run -s none "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1
}
if [[ "${1:-}" == "ci" ]]; then
  cargo fuzz build -s none
  for target in "${TARGETS[@]}"; do run "$target" 6; done
else
  [[ $# -eq 2 ]] || { echo "usage: fuzz/run.sh <target> <seconds> | fuzz/run.sh ci" >&2; exit 2; }
  run "$1" "$2"
fi
