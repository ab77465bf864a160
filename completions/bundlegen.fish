complete -c bundlegen -l root -d 'State root: the image store is ROOT/images, the layer cache ROOT/layers' -r -F
complete -c bundlegen -l rootfs-mode -d 'How to make the rootfs' -r -f -a "auto\t'Overlay when root and overlayfs allow, copy otherwise'
overlay\t'Overlay mount of cached layers'
copy\t'A plain directory'"
complete -c bundlegen -l entrypoint -d 'Replace the image\'s Entrypoint ("" clears it, and the image\'s Cmd with it)' -r
complete -c bundlegen -s e -l env -d 'Set an environment variable, KEY=VALUE (repeatable)' -r
complete -c bundlegen -l env-file -d 'Read KEY=VALUE lines from a file (# comments and blank lines skipped)' -r -F
complete -c bundlegen -l cwd -d 'Working directory inside the container' -r
complete -c bundlegen -s u -l user -d 'User: NAME, UID, UID:GID, NAME:GROUP (resolved in the image\'s /etc/passwd)' -r
complete -c bundlegen -l hostname -d 'Hostname (default: the bundle directory\'s name)' -r
complete -c bundlegen -l mount -d 'Bind mount SRC at DST, read-only with :ro (repeatable)' -r
complete -c bundlegen -l tmpfs -d 'Mount a tmpfs at this path (repeatable)' -r
complete -c bundlegen -l cap-add -d 'Add a capability (NET_ADMIN or CAP_NET_ADMIN; ALL for every one)' -r
complete -c bundlegen -l cap-drop -d 'Drop a capability (or ALL)' -r
complete -c bundlegen -l memory -d 'Memory limit: bytes, or with k, m, g suffix' -r
complete -c bundlegen -l cpus -d 'CPU limit in CPUs (0.5 is half a CPU)' -r
complete -c bundlegen -l pids-limit -d 'Maximum number of processes' -r
complete -c bundlegen -l net -d 'Network: none (a new namespace with loopback), host, or a netns path to join' -r
complete -c bundlegen -l annotation -d 'Add an annotation, KEY=VALUE (repeatable)' -r
complete -c bundlegen -l patch -d 'JSON merge patch (RFC 7396) applied to config.json last; - reads stdin' -r
complete -c bundlegen -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c bundlegen -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c bundlegen -l remove -d 'Remove bundles: unmount the rootfs, delete the directory, release its layers'
complete -c bundlegen -l prune -d 'Delete cached layers that no image in the store and no bundle uses'
complete -c bundlegen -l json -d 'Print what was made as JSON on stdout (see JSON OUTPUT)'
complete -c bundlegen -l read-only -d 'Make the rootfs read-only'
complete -c bundlegen -s t -l tty -d 'Give the process a terminal'
complete -c bundlegen -l privileged -d 'All the capabilities this process holds, no seccomp filter, no masked paths, no no_new_privs'
complete -c bundlegen -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c bundlegen -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bundlegen -s V -l version -d 'Print version'
