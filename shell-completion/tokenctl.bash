# SPDX-License-Identifier: MIT
# bash completion for tokenctl: verbs, options, and the names of the
# credentials tokend holds (asked of the daemon, never of a file).

_tokenctl_credentials() {
        local socket=()
        [[ -n $1 ]] && socket=(--socket "$1")
        tokenctl "${socket[@]}" --json list 2>/dev/null |
                sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p'
}

_tokenctl() {
        local cur prev words cword
        if declare -F _init_completion >/dev/null 2>&1; then
                _init_completion || return
        else
                cur=${COMP_WORDS[COMP_CWORD]}
                prev=${COMP_WORDS[COMP_CWORD-1]}
                words=("${COMP_WORDS[@]}")
                cword=$COMP_CWORD
        fi

        local verbs="login add list token revoke remove store help"
        local global_opts="--socket --json --version --help"
        local i verb="" socket=""
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                --socket) socket=${words[i+1]}; ((i++)) ;;
                --socket=*) socket=${words[i]#--socket=} ;;
                -*) ;;
                *) verb=${words[i]}; break ;;
                esac
        done

        case $prev in
        --socket|--client-secret-file|--providers-dir)
                COMPREPLY=($(compgen -f -- "$cur"))
                return ;;
        --flow)
                COMPREPLY=($(compgen -W "device auth-code" -- "$cur"))
                return ;;
        --auth-method)
                COMPREPLY=($(compgen -W "client_secret_basic client_secret_post none" -- "$cur"))
                return ;;
        --provider)
                COMPREPLY=($(compgen -W "github google microsoft gitlab oidc" -- "$cur"))
                return ;;
        --to)
                COMPREPLY=($(compgen -W "keyring secret-service" -- "$cur"))
                return ;;
        --issuer|--token-endpoint|--client-id|--scope|--resource|--min-ttl|--tenant)
                return ;;
        esac

        if [[ -z $verb ]]; then
                COMPREPLY=($(compgen -W "$verbs $global_opts" -- "$cur"))
                return
        fi

        case $verb in
        token|revoke|remove)
                if [[ $cur == -* ]]; then
                        [[ $verb == token ]] && COMPREPLY=($(compgen -W "--scope --resource --min-ttl" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$(_tokenctl_credentials "$socket")" -- "$cur"))
                fi ;;
        login)
                COMPREPLY=($(compgen -W "--provider --tenant --issuer --client-id --client-secret-file --auth-method --scope --flow --no-browser --insecure-loopback --replace" -- "$cur")) ;;
        add)
                COMPREPLY=($(compgen -W "--issuer --token-endpoint --client-id --client-secret-file --auth-method --scope --insecure-loopback --replace" -- "$cur")) ;;
        store)
                COMPREPLY=($(compgen -W "migrate --to" -- "$cur")) ;;
        esac
}

complete -F _tokenctl tokenctl
