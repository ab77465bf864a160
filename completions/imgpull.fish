complete -c imgpull -l root -d 'State root; the image store is ROOT/images' -r -F
complete -c imgpull -l platform -d 'Platform to pick from multi-platform images, OS/ARCH[/VARIANT]' -r
complete -c imgpull -l creds -d 'Credentials for the image\'s registry, USER:PASSWORD (overrides auth files)' -r
complete -c imgpull -l mirror-with-credentials -d 'A mirror that may be sent the --creds of the registry it mirrors, HOST[:PORT]; may be repeated' -r
complete -c imgpull -l peers -d 'Ask other nodes\' imgserve for blobs before the registry: a file of ADDR:PORT lines, or dns:NAME:PORT (NAME\'s A and AAAA records, each with PORT)' -r -F
complete -c imgpull -l self -d 'This node\'s own imgserve: ranked with the peers, asked where it ranks first' -r
complete -c imgpull -l authfile -d 'Auth file to read credentials from (containers auth.json format)' -r -F
complete -c imgpull -l insecure-registry -d 'Use plain HTTP for this registry, HOST[:PORT]; may be repeated' -r
complete -c imgpull -l certs-dir -d 'Directory of per-registry certificates, DIR/HOST[:PORT]/*.crt; may be repeated' -r -F
complete -c imgpull -l registries-conf -d 'containers-registries.conf v2 file for rewrites, mirrors and insecure registries' -r -F
complete -c imgpull -l policy -d 'containers-policy.json(5) signature policy every pull is checked against' -r -F
complete -c imgpull -l registries.d -d 'containers-registries.d(5) directory: where signatures are looked for' -r -F
complete -c imgpull -l max-concurrent-downloads -d 'Blobs downloaded at once' -r
complete -c imgpull -l retries -d 'Retries of a request after a transient failure (5xx, reset, timeout)' -r
complete -c imgpull -l retry-delay -d 'Delay before the first retry, in milliseconds; it doubles each time' -r
complete -c imgpull -l stall-timeout -d 'Seconds a connection may deliver nothing before it counts as failed' -r
complete -c imgpull -l progress -d 'Progress on stderr: bars on a terminal, plain lines otherwise (auto), or JSON lines, or none' -r -f -a "auto\t'Bars on a terminal, plain lines otherwise'
bars\t'Bars'
plain\t'One plain line per finished blob'
json\t'One JSON object per event'
none\t'Nothing'"
complete -c imgpull -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c imgpull -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c imgpull -l list -d 'List the images in the store (NAME, DIGEST, SIZE; JSON lines with --json)'
complete -c imgpull -l inspect -d 'Print one stored image as JSON: name, digests, size, manifest and config'
complete -c imgpull -l remove -d 'Remove images from the store by name, with the blobs and unpacked layers that no other image and no bundle uses'
complete -c imgpull -l prune -d 'Delete blobs and unpacked layers that no image and no bundle uses, and the temp files of killed pulls and unpacks'
complete -c imgpull -l unpack -d 'Unpack each layer into ROOT/layers as it downloads (needs root)'
complete -c imgpull -l json -d 'Write results on stdout as JSON lines (see JSON OUTPUT)'
complete -c imgpull -s q -l quiet -d 'No progress output (same as --progress=none)'
complete -c imgpull -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c imgpull -s h -l help -d 'Print help (see more with \'--help\')'
complete -c imgpull -s V -l version -d 'Print version'
