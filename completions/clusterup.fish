# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_clusterup_global_optspecs
    string join \n config= stack= json state-dir= metrics-file= v/verbose q/quiet h/help V/version
end

function __fish_clusterup_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_clusterup_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_clusterup_using_subcommand
    set -l cmd (__fish_clusterup_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c clusterup -n "__fish_clusterup_needs_command" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_needs_command" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_needs_command" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_needs_command" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_needs_command" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_needs_command" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_needs_command" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_needs_command" -s h -l help -d 'Print help'
complete -c clusterup -n "__fish_clusterup_needs_command" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "check" -d 'Compare running images with their registries; change nothing'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "apply" -d 'Pull and recreate the services with updates, health-gated, rolling back a service that does not become healthy'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "rollback" -d 'Return the stack to the previous good revision, or to --to REV'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "pause" -d 'Stop unattended applies (`apply --auto`) of the stacks'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "resume" -d 'Allow unattended applies again'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "status" -d 'Show each service\'s image, digest and health, and recent revisions'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "serve" -d 'Serve the control API and push webhooks; apply on a schedule'
complete -c clusterup -n "__fish_clusterup_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l only -d 'Only report; never offer to apply'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterup -n "__fish_clusterup_using_subcommand check" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l expect-revision -d 'Deploy this commit of the branch (a prefix is enough) instead of its head: a fleet rollout applies what was checked on the first host even if the branch moves meanwhile' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l auto -d 'Unattended: apply what policy allows, never prompt (for timers)'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -s y -l yes -d 'Apply without asking for confirmation (changes that put data at risk still need --accept-data-risk)'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l accept-data-risk -d 'Also apply changes that put data at risk (a removed service with an anonymous volume, a removed or reconfigured named volume)'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l retry -d 'Apply even targets that failed before or that an operator rolled back from (unattended runs otherwise hold them back)'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l ignore-min-age -d 'Take new images younger than their `min_age` too (an emergency fix); without it, unattended runs wait and a manual run asks'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l rebuild -d 'Build images again from the files as they are (the SERVICEs named, else every service with `build:`) and recreate them through the health gate: source changes of a directory stack, which clusterup cannot see'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -s h -l help -d 'Print help'
complete -c clusterup -n "__fish_clusterup_using_subcommand apply" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l to -d 'Revision to return to: its number, a git commit prefix, a time (the last good revision started by then, e.g. 2026-11-24T18:00:00Z), or an immutable image tag such as CI\'s autonomy-<sha>' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l reason -d 'Why, recorded with the revision rolled away from' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l list -d 'List the recorded revisions and change nothing'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l dry-run -d 'Print the plan and change nothing'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -s y -l yes -d 'Roll back without asking for confirmation'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l restore-volumes -d 'Also put the volumes\' data back from volume snapshots: those revision REV took (with --to), else those of the revision rolled back from. Their content now is moved aside until the services are healthy'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterup -n "__fish_clusterup_using_subcommand rollback" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l reason -d 'Why, for whoever finds the stack paused' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l for -d 'End the pause by itself after this long (e.g. 2h, 30m)' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l until -d 'End the pause by itself at this time (RFC 3339, e.g. 2026-11-26T06:00:00Z)' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -s h -l help -d 'Print help'
complete -c clusterup -n "__fish_clusterup_using_subcommand pause" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -s h -l help -d 'Print help'
complete -c clusterup -n "__fish_clusterup_using_subcommand resume" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l revisions -d 'How many recent revisions to show' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l watch -d 'Redraw every 2 seconds (on a terminal)'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -s h -l help -d 'Print help'
complete -c clusterup -n "__fish_clusterup_using_subcommand status" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l listen -d 'Address to listen on; anything but loopback needs TLS or --insecure-http' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l credentials -d 'Tokens and webhook secrets, one per line: `token NAME read|operate VALUE`, `github STACK|* SECRET`, `image SECRET` (mode 0600)' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l tls-cert -d 'TLS certificate chain (PEM)' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l tls-key -d 'TLS private key (PEM, mode 0600)' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l every -d 'Run `apply --auto` of every stack this often (e.g. 15m), for hosts without a systemd timer' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l jitter -d 'Wait up to this much longer before each scheduled run, at random' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l config -d 'Configuration file [default: /etc/clusterup/clusterup.yaml; without one, the current directory is the stack]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l stack -d 'Only this stack (by name) from the configuration' -r
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l state-dir -d 'Where journals, backups and locks live [default: /var/lib/clusterup]' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l metrics-file -d 'Write node_exporter textfile-collector metrics here after the run' -r -F
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l insecure-http -d 'Listen on a non-loopback address without TLS: only behind a reverse proxy that terminates TLS, on a network no one else can reach'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -l json -d 'Print one JSON document instead of human output'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -s v -l verbose -d 'More detail'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -s q -l quiet -d 'Only errors and the final result'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c clusterup -n "__fish_clusterup_using_subcommand serve" -s V -l version -d 'Print version'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "check" -d 'Compare running images with their registries; change nothing'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "apply" -d 'Pull and recreate the services with updates, health-gated, rolling back a service that does not become healthy'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "rollback" -d 'Return the stack to the previous good revision, or to --to REV'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "pause" -d 'Stop unattended applies (`apply --auto`) of the stacks'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "resume" -d 'Allow unattended applies again'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "status" -d 'Show each service\'s image, digest and health, and recent revisions'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "serve" -d 'Serve the control API and push webhooks; apply on a schedule'
complete -c clusterup -n "__fish_clusterup_using_subcommand help; and not __fish_seen_subcommand_from check apply rollback pause resume status serve help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
