# Sourced by <scheduler>/env.sh: puts that directory's bin/ first on PATH (once).
_fake_bin="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd -P)/bin"
case ":$PATH:" in
  *":$_fake_bin:"*) ;;
  *) PATH="$_fake_bin:$PATH" ;;
esac
export PATH
unset _fake_bin
