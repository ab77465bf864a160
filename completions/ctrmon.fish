complete -c ctrmon -l bundle -d 'Bundle directory of the container (not needed with --exec or --infra)' -r -F
complete -c ctrmon -l id -d 'Container id' -r
complete -c ctrmon -l runtime -d 'OCI runtime to run' -r -F
complete -c ctrmon -l runtime-root -d 'The runtime\'s state directory (its --root)' -r -F
complete -c ctrmon -l runtime-arg -d 'A global option for the runtime, given before each of its subcommands (repeatable; write --runtime-arg=--systemd-cgroup)' -r
complete -c ctrmon -l run-dir -d 'ctrmon\'s own state directory; defaults for the files below live in RUN/ctrmon/ID' -r -F
complete -c ctrmon -l log-path -d 'CRI log file [default: RUN/ctrmon/ID/ctr.log; none for an exec]' -r -F
complete -c ctrmon -l exit-file -d 'Exit status file, JSON [default: RUN/ctrmon/ID/exit; none for an exec]' -r -F
complete -c ctrmon -l pid-file -d 'Container pid file [default: RUN/ctrmon/ID/pid; RUN/ctrmon/ID/exec-N.pid for an exec; none for --infra, whose process\'s pid it then holds]' -r -F
complete -c ctrmon -l sync-fd -d 'Inherited descriptor to write the {"pid": N} or {"pid": -1, "message": …} line to' -r
complete -c ctrmon -l attach-socket -d 'Serve attach clients on this unix socket (framing: see the ATTACH section)' -r -F
complete -c ctrmon -l attach-wait -d 'Start the process only once a first client has connected to the attach socket, waiting at most SECONDS (for an exec whose output must all reach a client)' -r
complete -c ctrmon -l cgroup-parent -d 'Put the monitor in the cgroup PARENT/ctrmon-ID (every hierarchy but v1 cpuset), removed when it exits; with --cgroup-manager systemd, PARENT is a slice and the monitor asks systemd for the scope crikit-ctrmon-ID.scope in it. The container goes where its cgroupsPath says (with --infra, the infra process goes there and stays)' -r
complete -c ctrmon -l cgroup-manager -d 'Who makes the monitor\'s cgroup: ctrmon itself (cgroupfs), or systemd over D-Bus (systemd; --cgroup-parent is then a slice such as kubepods.slice)' -r -f -a "cgroupfs\t'ctrmon makes PARENT/ctrmon-ID in every hierarchy'
systemd\t'systemd makes the scope crikit-ctrmon-ID.scope in the slice PARENT'"
complete -c ctrmon -l restore -d 'Restore the container from the CRIU images in DIR (`RUNTIME restore`, CRIU\'s restore.log beside them) instead of creating it; it runs once ctrmon returns' -r -F
complete -c ctrmon -l log-line-max -d 'Split log lines longer than this many bytes into partial records' -r
complete -c ctrmon -l exec -d 'Exec mode: run the process described in FILE (a runtime-spec process object) in the running container ID. Without --attach-socket: wait for it and print a JSON result; with it: serve it on the socket like a container (see EXEC)' -r -F
complete -c ctrmon -l exec-timeout -d 'With a sync --exec: kill the process after this many seconds' -r
complete -c ctrmon -l exec-output-max -d 'With --exec: keep at most this many bytes of each output stream' -r
complete -c ctrmon -l ns-dir -d 'With --infra: the pod\'s pinned namespaces (files named net, ipc, uts, user), each joined when present; the new root\'s mount point' -r -F
complete -c ctrmon -l log-size-max -d 'Truncate the log and start over when it would grow past this many bytes' -r
complete -c ctrmon -l log-file -d 'Where the monitor writes its own diagnostics once it has detached (appended) [default: RUN/ctrmon/ID/ctrmon.log; none for an exec]' -r -F
complete -c ctrmon -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c ctrmon -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c ctrmon -l stdin -d 'Give the container a stdin pipe that attach clients write to'
complete -c ctrmon -s t -l tty -d 'Give the container a terminal (its process.terminal must be true); output is logged as stdout, attach clients may resize it'
complete -c ctrmon -l start -d 'Also start the container (without it the caller runs `RUNTIME start`)'
complete -c ctrmon -l cleanup -d 'Run `RUNTIME delete` once the container has exited (and, when it succeeded, create the state directory\'s `deleted`)'
complete -c ctrmon -l infra -d 'Infra mode: start the infra process of the pod ID, PID 1 of a new PID namespace that its containers join, in the namespaces pinned in --ns-dir, and print its pid (see INFRA)'
complete -c ctrmon -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c ctrmon -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctrmon -s V -l version -d 'Print version'
