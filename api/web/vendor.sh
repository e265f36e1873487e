#!/usr/bin/env bash
# Re-fetches the vendored front-end files from the npm registry at their pinned versions.
#
#   bash api/web/vendor.sh            # needs npm (Node.js); `make up` and the tests do not
#
# Each package is fetched with `npm pack NAME@VERSION` (the registry's tarball, checked against
# the registry's integrity hash by npm), and only the listed files are copied, together with
# the package's licence files, into api/web/static/vendor/<dir>/ (tests/browser/vendor/ for
# axe-core, which only the tests load). `git diff --stat` afterwards shows what changed.
# To upgrade a package: change its version here, run the script, run `make test`, and update
# the table in docs/console.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

STATIC=api/web/static/vendor
TESTS=tests/browser/vendor

# destination  package@version  files to copy (path inside the package[=name to copy it as])
PACKAGES=(
  "$STATIC/preact            preact@11.2.0                      dist/preact.mjs hooks/dist/hooks.mjs LICENSE"
  "$STATIC/htm               htm@3.1.1                          dist/htm.mjs LICENSE"
  "$STATIC/uplot             uplot@1.6.32                       dist/uPlot.esm.js dist/uPlot.min.css LICENSE"
  "$STATIC/graphql-ws        graphql-ws@6.4.2                   dist/client.js dist/common-CGW11Fyb.js LICENSE.md"
  "$STATIC/react             react@18.3.1                       umd/react.production.min.js LICENSE"
  "$STATIC/react-dom         react-dom@18.3.1                   umd/react-dom.production.min.js LICENSE"
  "$STATIC/graphiql          graphiql@3.8.3                     graphiql.min.js graphiql.min.css LICENSE"
  "$STATIC/swagger-ui        swagger-ui-dist@5.35.0             swagger-ui-bundle.js swagger-ui-standalone-preset.js swagger-ui.css swagger-ui-bundle.js.LICENSE.txt swagger-ui-standalone-preset.js.LICENSE.txt LICENSE NOTICE"
  "$TESTS/axe-core           axe-core@4.14.1                    axe.min.js LICENSE LICENSE-3RD-PARTY.txt"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for line in "${PACKAGES[@]}"; do
  read -r dest spec files <<<"$line"
  echo "fetching $spec → $dest"
  tarball=$(cd "$work" && npm pack --silent "$spec")
  rm -rf "$work/package" && tar -xzf "$work/$tarball" -C "$work"
  rm -rf "$dest" && mkdir -p "$dest"
  for file in $files; do
    cp "$work/package/$file" "$dest/$(basename "$file")"
  done
  # strip source-map comments: the maps are not vendored, and a browser would ask for them
  find "$dest" \( -name '*.js' -o -name '*.mjs' -o -name '*.css' \) -exec \
    sed -i -E '/^\/[\/*][#@] sourceMappingURL=[^ ]*( \*\/)?$/d; s#/[/*][#@] sourceMappingURL=[^ ]*\.map( \*/)?##' {} +
  echo "$spec" >"$dest/VERSION"
done
echo "done; review with: git status --short $STATIC $TESTS"
