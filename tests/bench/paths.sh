# paths.sh - sourced by the benchmark scripts: where the tools, the build
# directory and the shared test data are, unless the environment says.
# shellcheck shell=bash
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
TITAN_BIN=${TITAN_BIN:-$root/build/bin}
TITAN_BUILD=${TITAN_BUILD:-$root/build}
TITAN_DATA=${TITAN_DATA:-$root/../shared/data}
