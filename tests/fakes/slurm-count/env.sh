# Source this file (bash) to count squeue/sacct calls: wrappers first on PATH log each call to calls.log here.
. "$(dirname "${BASH_SOURCE[0]}")/../lib/prepend-bin.sh"
