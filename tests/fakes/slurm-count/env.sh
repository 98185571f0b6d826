# Source this file (bash) to count squeue/sacct calls: wrappers first on PATH log each call to calls.log here.
_fake_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/bin"
case ":$PATH:" in
  "$_fake_bin":*) ;;
  *) PATH="$_fake_bin:$PATH" ;;
esac
export PATH
unset _fake_bin
