# Source this file (bash) to put the fake scheduler commands of this directory first on PATH.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/prepend-bin.sh"
