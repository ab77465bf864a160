complete -c imgserve -l listen -d 'Address and port to listen on (port 0 picks a free one)' -r
complete -c imgserve -l root -d 'State root; the image store is ROOT/images' -r -F
complete -c imgserve -l tls-cert -d 'Serve HTTPS with this PEM certificate chain (re-read when it changes)' -r -F
complete -c imgserve -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c imgserve -l tls-client-ca -d 'Require client certificates signed by a CA of this PEM file' -r -F
complete -c imgserve -l basic-auth-file -d 'Require HTTP Basic credentials: one USER:PASSWORD per line' -r -F
complete -c imgserve -l bearer-token-file -d 'Accept these bearer tokens (Authorization: Bearer TOKEN): one per line' -r -F
complete -c imgserve -l max-connections -d 'Connections served at once; more wait to be accepted (lowered to fit the open-file limit)' -r
complete -c imgserve -l peers -d 'The cluster\'s nodes: a file of ADDR:PORT lines, or dns:NAME:PORT' -r -F
complete -c imgserve -l self -d 'This node\'s own address in --peers' -r
complete -c imgserve -l max-fetches -d 'Blobs fetched for peers at once; asked for more, imgserve answers 503' -r
complete -c imgserve -l registries-conf -d 'containers-registries.conf v2 file for the registries fetched from' -r -F
complete -c imgserve -l insecure-registry -d 'Use plain HTTP for this registry, HOST[:PORT]; may be repeated' -r
complete -c imgserve -l authfile -d 'Auth file with the node\'s own credentials for the registries fetched from' -r -F
complete -c imgserve -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c imgserve -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c imgserve -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c imgserve -s h -l help -d 'Print help (see more with \'--help\')'
complete -c imgserve -s V -l version -d 'Print version'
