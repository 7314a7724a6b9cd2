#!/usr/bin/env bash
# Compiles one translation unit that includes every header in
# csrc/include/facegeom (in one order, then in reverse), so two headers that
# define the same name in the same namespace, or a header that does not include
# what it uses, fail here: g++ -fsyntax-only always, nvcc -c too when nvcc is on
# PATH. Run from anywhere; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

headers=$(cd csrc/include && ls facegeom/*.h | sort)
{
  for h in $headers; do echo "#include \"$h\""; done
  echo "int main() { return 0; }"
} >"$tmp/all_headers.cpp"
{
  for h in $(echo "$headers" | sort -r); do echo "#include \"$h\""; done
  echo "int main() { return 0; }"
} >"$tmp/all_headers_reversed.cpp"

for tu in all_headers all_headers_reversed; do
  echo "g++ -fsyntax-only $tu ($(echo "$headers" | wc -l) headers)"
  g++ -std=c++17 -fopenmp -Wall -Wextra -Werror -fsyntax-only -Icsrc/include -Icsrc "$tmp/$tu.cpp"
done

if command -v nvcc >/dev/null 2>&1; then
  cp "$tmp/all_headers.cpp" "$tmp/all_headers.cu"
  echo "nvcc -c all_headers.cu"
  nvcc -std=c++17 -c "$tmp/all_headers.cu" -o "$tmp/all_headers.o" -Icsrc/include -Icsrc
else
  echo "nvcc not found: CUDA header check skipped"
fi
echo "headers OK"
