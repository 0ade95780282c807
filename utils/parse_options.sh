#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by a recipe after it declares its variables:
#   stage=0; nj=4; . utils/parse_options.sh
# "--opt-name value" or "--opt_name value" sets the shell variable opt_name, which must
# already exist (unknown options are errors). Boolean variables (current value true or
# false) only accept true/false. "--help" prints $help_message and the options with their
# current values, then exits 0. "--config FILE" sources FILE (bash assignments) first.
# Positional arguments stop option parsing and stay in "$@".

__po_usage() {
  echo "${help_message:-Usage: $0 [options]}"
  echo "Options (current values):"
  for __v in $(compgen -v); do :; done
  grep -oE '^[a-z_][a-z0-9_]*=' "$0" | tr -d '=' | sort -u | while read -r __v; do
    [ -n "${!__v+x}" ] && printf '  --%-22s %s\n' "$__v" "${!__v}"
  done
}

while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h) __po_usage; exit 0 ;;
    --config)
      [ $# -ge 2 ] || { echo "$0: --config needs a file" >&2; exit 1; }
      [ -f "$2" ] || { echo "$0: config file $2 not found" >&2; exit 1; }
      . "$2"; shift 2 ;;
    --*=*) echo "$0: use '--opt value', not '--opt=value' ($1)" >&2; exit 1 ;;
    --*)
      __name=$(echo "${1#--}" | sed 's/-/_/g')
      if [ -z "${!__name+x}" ]; then
        echo "$0: invalid option $1 (see $0 --help)" >&2; exit 1
      fi
      [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
      __old=${!__name}
      if [ "$__old" = true ] || [ "$__old" = false ]; then
        case "$2" in true|false) ;; *) echo "$0: option $1 takes true or false, got '$2'" >&2; exit 1 ;; esac
      fi
      printf -v "$__name" '%s' "$2"
      shift 2 ;;
    *) break ;;
  esac
done
unset __name __old __v
true
