# SPDX-License-Identifier: MIT
# bash completion for tokenctl: verbs, options, and the names of the
# credentials, waiting requests and grants tokend holds (asked of the daemon,
# never of a file).

_tokenctl_credentials() {
        local socket=()
        [[ -n $1 ]] && socket=(--socket "$1")
        tokenctl "${socket[@]}" --json list 2>/dev/null |
                sed -n 's/^ *"name": *"\([^"]*\)".*/\1/p'
}

# The ids of the waiting requests ($2 = pending) or of the grants ($2 = grants).
_tokenctl_ids() {
        local socket=()
        [[ -n $1 ]] && socket=(--socket "$1")
        tokenctl "${socket[@]}" --json "$2" 2>/dev/null |
                sed -n 's/^ *"id": *"\([^"]*\)".*/\1/p'
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

        local verbs="login add list status token exec credential-helper revoke remove store audit pending watch approve deny grants reload whoami help"
        local global_opts="--socket --json --version --help"
        local i verb="" socket="" verb_at=0
        for ((i = 1; i < cword; i++)); do
                case ${words[i]} in
                --socket) socket=${words[i+1]}; ((i++)) ;;
                --socket=*) socket=${words[i]#--socket=} ;;
                -*) ;;
                *) verb=${words[i]}; verb_at=$i; break ;;
                esac
        done
        # The words after the verb that are not options: "grants revoke ID".
        local args=()
        for ((i = verb_at + 1; verb_at > 0 && i < cword; i++)); do
                case ${words[i]} in
                --for|--scope|--env|--host|--username|--resource|--min-ttl) ((i++)) ;;
                -*) ;;
                *) args+=("${words[i]}") ;;
                esac
        done

        # "tokenctl exec NAME ... -- CMD ARG...": after "--" the words are the command's.
        if [[ $verb == exec ]]; then
                for ((i = verb_at + 1; i < COMP_CWORD && i < ${#COMP_WORDS[@]}; i++)); do
                        case ${COMP_WORDS[i]} in
                        --env|--scope|--resource|--min-ttl) ((i++)) ;;
                        --)
                                if ((COMP_CWORD == i + 1)); then
                                        COMPREPLY=($(compgen -c -- "$cur"))
                                elif declare -F _command_offset >/dev/null 2>&1; then
                                        _command_offset $((i + 1))
                                else
                                        COMPREPLY=($(compgen -f -- "$cur"))
                                fi
                                return ;;
                        esac
                done
        fi

        case $prev in
        --socket|--client-secret-file|--providers-dir)
                COMPREPLY=($(compgen -f -- "$cur"))
                return ;;
        --state-dir)
                COMPREPLY=($(compgen -d -- "$cur"))
                return ;;
        --credential)
                COMPREPLY=($(compgen -W "$(_tokenctl_credentials "$socket")" -- "$cur"))
                return ;;
        --for)
                COMPREPLY=($(compgen -W "15m 1h 8h 1d" -- "$cur"))
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
        --env)
                COMPREPLY=($(compgen -W "TOKEND_TOKEN GH_TOKEN GITHUB_TOKEN GITLAB_TOKEN" -- "$cur"))
                return ;;
        --username)
                COMPREPLY=($(compgen -W "x-access-token oauth2" -- "$cur"))
                return ;;
        --issuer|--token-endpoint|--client-id|--scope|--resource|--min-ttl|--tenant|--since|--agent|--host)
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
        exec)
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "--env --scope --resource --min-ttl" -- "$cur"))
                elif ((${#args[@]} == 0)); then
                        COMPREPLY=($(compgen -W "$(_tokenctl_credentials "$socket")" -- "$cur"))
                fi ;;
        credential-helper)
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "--host --username --scope --resource --min-ttl" -- "$cur"))
                elif ((${#args[@]} == 0)); then
                        COMPREPLY=($(compgen -W "$(_tokenctl_credentials "$socket")" -- "$cur"))
                elif ((${#args[@]} == 1)); then
                        COMPREPLY=($(compgen -W "get store erase" -- "$cur"))
                fi ;;
        login)
                COMPREPLY=($(compgen -W "--provider --tenant --issuer --client-id --client-secret-file --auth-method --scope --flow --no-browser --insecure-loopback --replace" -- "$cur")) ;;
        add)
                COMPREPLY=($(compgen -W "--issuer --token-endpoint --client-id --client-secret-file --auth-method --scope --insecure-loopback --replace" -- "$cur")) ;;
        store)
                COMPREPLY=($(compgen -W "migrate --to" -- "$cur")) ;;
        approve|deny)
                if [[ $cur == -* ]]; then
                        [[ $verb == approve ]] && COMPREPLY=($(compgen -W "--for --once --process --scope --json" -- "$cur"))
                elif ((${#args[@]} == 0)); then
                        COMPREPLY=($(compgen -W "$(_tokenctl_ids "$socket" pending)" -- "$cur"))
                fi ;;
        grants)
                if [[ $cur == -* ]]; then
                        ((${#args[@]} == 0)) && COMPREPLY=($(compgen -W "--json" -- "$cur"))
                elif ((${#args[@]} == 0)); then
                        COMPREPLY=($(compgen -W "revoke" -- "$cur"))
                elif [[ ${args[0]} == revoke ]] && ((${#args[@]} == 1)); then
                        COMPREPLY=($(compgen -W "$(_tokenctl_ids "$socket" grants)" -- "$cur"))
                fi ;;
        pending|watch|reload|whoami)
                COMPREPLY=($(compgen -W "--json" -- "$cur")) ;;
        audit)
                COMPREPLY=($(compgen -W "--since --credential --agent --json --state-dir" -- "$cur")) ;;
        esac
}

complete -F _tokenctl tokenctl
