# Source this file (bash) to put the fake scheduler commands of this directory first on PATH.
_fake_bin="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/bin"
case ":$PATH:" in
  "$_fake_bin":*) ;;
  *) PATH="$_fake_bin:$PATH" ;;
esac
export PATH
unset _fake_bin
