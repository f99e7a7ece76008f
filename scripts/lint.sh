#!/bin/sh
# lint.sh - source checks that need no build: banned unbounded string
# functions (STYLE rule 10) and a documentation line for every parameter.
cd "$(dirname "$0")/.." || exit 1
bad=$(grep -nE '(^|[^a-z_])(strcpy|strcat|sprintf|vsprintf|gets)[[:space:]]*\(' \
      lib/*.[ch] master/*.[ch] smtpd/*.[ch] mailctl/*.[ch] test/unit/*.[ch] 2>/dev/null)
if [ -n "$bad" ]; then
    echo "lint: unbounded string functions (use str_copy/str_fmt):"
    echo "$bad"
    exit 1
fi
undoc=$(grep -E '^PARAM\(' lib/params.def | grep -E ', ""\)$')
if [ -n "$undoc" ]; then
    echo "lint: parameters without a doc line:"
    echo "$undoc"
    exit 1
fi
echo "lint: ok"
