# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_crid_global_optspecs
    string join \n config= listen= root= run-dir= runtime= default-runtime= cgroup-manager= cni-conf-dir= cni-bin-dir= registries-conf= pause-image= pull-progress-timeout= insecure-registry= pinned-images= mirror-with-credentials= peers= self= signature-policy= signature-policy-dir= registries-d= ctrmon= stream-address= stream-port= stream-max-sessions= stream-idle-timeout= stream-tls-cert= stream-tls-key= stream-tls-ca= events-file= events-file-max= events-backlog= metrics-address= log-level= log-format= v/verbose h/help V/version
end

function __fish_crid_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_crid_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_crid_using_subcommand
    set -l cmd (__fish_crid_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c crid -n "__fish_crid_needs_command" -l config -d 'TOML configuration file, keys named like these flags [default: /etc/crikit/crid.toml when it exists]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l listen -d 'Where to serve: unix:///PATH [default: unix://RUN/crid.sock]' -r
complete -c crid -n "__fish_crid_needs_command" -l root -d 'State directory: the image store, layers, containers [default: /var/lib/crikit as root]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l run-dir -d 'Runtime state directory [default: /run/crikit as root]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l runtime -d 'The OCI runtime of the default handler, runc (other handlers are configured in the file\'s [runtimes.NAME] tables) [default: runc]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l default-runtime -d 'The handler of pods whose RunPodSandbox names none: runc, crun (when installed) or one of the file\'s [runtimes.NAME] [default: crun when installed and --runtime is not given, else runc]' -r
complete -c crid -n "__fish_crid_needs_command" -l cgroup-manager -d 'Who makes containers\' cgroups: systemd (the runtime runs with --systemd-cgroup, monitors get scopes of their own over D-Bus; kubelet\'s cgroupDriver must be systemd) or cgroupfs [default: systemd when it is the init system, else cgroupfs]' -r -f -a "systemd\t'systemd\'s slices and scopes'
cgroupfs\t'directories under /sys/fs/cgroup'"
complete -c crid -n "__fish_crid_needs_command" -l cni-conf-dir -d 'CNI network configurations; the first .conflist (or .conf) by name is used [default: /etc/cni/net.d]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l cni-bin-dir -d 'CNI plugin directories, colon-separated [default: /opt/cni/bin:/usr/lib/cni]' -r
complete -c crid -n "__fish_crid_needs_command" -l registries-conf -d 'containers-registries.conf(5) file [default: $CONTAINERS_REGISTRIES_CONF or /etc/containers/registries.conf]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l pause-image -d 'Run the infra process of pods that share a PID namespace as a container of this image (registry.k8s.io/pause:3.10, say) instead of crid\'s own (ctrmon --infra: no image, bundle or runtime)' -r
complete -c crid -n "__fish_crid_needs_command" -l pull-progress-timeout -d 'Cancel an image pull that has made no progress for this many seconds; 0 never does [default: 300]' -r
complete -c crid -n "__fish_crid_needs_command" -l insecure-registry -d 'Plain HTTP for this registry (repeatable), as registries.conf\'s insecure = true' -r
complete -c crid -n "__fish_crid_needs_command" -l pinned-images -d 'Images reported pinned, which kubelet\'s image garbage collection never removes: exact names, `PREFIX*` or `*KEYWORD*` (repeatable, or comma-separated); the pause image is always pinned' -r
complete -c crid -n "__fish_crid_needs_command" -l mirror-with-credentials -d 'A mirror (registries.conf) that may be sent the credentials a PullImage request carries for the registry it mirrors (repeatable); other mirrors get only those stored for their own host' -r
complete -c crid -n "__fish_crid_needs_command" -l peers -d 'Ask other nodes\' imgserve for blobs before the registry, once the registry gave the manifest with the pull\'s credentials: a file of ADDR:PORT lines, or dns:NAME:PORT; read at each pull, ranked per blob by rendezvous hashing' -r -F
complete -c crid -n "__fish_crid_needs_command" -l self -d 'This node\'s own imgserve: ranked with the peers, asked where it ranks first' -r
complete -c crid -n "__fish_crid_needs_command" -l signature-policy -d 'containers-policy.json(5) file pulls are checked against [default: /etc/containers/policy.json when it exists; none lets anything in]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l signature-policy-dir -d 'Directory of per-namespace policies: a pull for a pod of NAMESPACE is checked against DIR/NAMESPACE.json when it exists, else --signature-policy' -r -F
complete -c crid -n "__fish_crid_needs_command" -l registries-d -d 'containers-registries.d(5) directory: where signatures are looked for [default: /etc/containers/registries.d]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l ctrmon -d 'The ctrmon binary [default: the one beside crid, else ctrmon on PATH]' -r -F
complete -c crid -n "__fish_crid_needs_command" -l stream-address -d 'Address of the streaming server that Exec, Attach and PortForward URLs point at [default: 127.0.0.1]' -r
complete -c crid -n "__fish_crid_needs_command" -l stream-port -d 'Its port; 0 picks a free one [default: 0]' -r
complete -c crid -n "__fish_crid_needs_command" -l stream-max-sessions -d 'Streaming sessions served at once; more are refused with 503 [default: 64]' -r
complete -c crid -n "__fish_crid_needs_command" -l stream-idle-timeout -d 'End a streaming session after this many seconds without traffic either way [default: 14400, as kubelet\'s]' -r
complete -c crid -n "__fish_crid_needs_command" -l stream-tls-cert -d 'Serve the streaming server over TLS with this PEM certificate (chain); URLs become https. Read again when it changes' -r -F
complete -c crid -n "__fish_crid_needs_command" -l stream-tls-key -d 'The certificate\'s PEM private key' -r -F
complete -c crid -n "__fish_crid_needs_command" -l stream-tls-ca -d 'Require client certificates that chain to these PEM CA certificates (needs --stream-tls-cert)' -r -F
complete -c crid -n "__fish_crid_needs_command" -l events-file -d 'Append every container event to FILE as a JSON line (see EVENTS)' -r -F
complete -c crid -n "__fish_crid_needs_command" -l events-file-max -d 'Rotate the events file to FILE.1 when a line would take it past BYTES [default: 10485760]' -r
complete -c crid -n "__fish_crid_needs_command" -l events-backlog -d 'Drop a GetContainerEvents subscriber that falls N events behind and reads none for a second (see EVENTS) [default: 1024]' -r
complete -c crid -n "__fish_crid_needs_command" -l metrics-address -d 'Serve crid\'s own metrics (Prometheus text) at http://ADDR:PORT/metrics; off unless given (see METRICS)' -r
complete -c crid -n "__fish_crid_needs_command" -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c crid -n "__fish_crid_needs_command" -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c crid -n "__fish_crid_needs_command" -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c crid -n "__fish_crid_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crid -n "__fish_crid_needs_command" -s V -l version -d 'Print version'
complete -c crid -n "__fish_crid_needs_command" -f -a "config" -d 'Print the configuration crid would run with (the file, the flags before `config` and the defaults resolved) as a crid.toml, and exit'
complete -c crid -n "__fish_crid_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c crid -n "__fish_crid_using_subcommand config" -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c crid -n "__fish_crid_using_subcommand config" -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c crid -n "__fish_crid_using_subcommand config" -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c crid -n "__fish_crid_using_subcommand config" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crid -n "__fish_crid_using_subcommand help; and not __fish_seen_subcommand_from config help" -f -a "config" -d 'Print the configuration crid would run with (the file, the flags before `config` and the defaults resolved) as a crid.toml, and exit'
complete -c crid -n "__fish_crid_using_subcommand help; and not __fish_seen_subcommand_from config help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
