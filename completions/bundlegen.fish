complete -c bundlegen -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c bundlegen -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c bundlegen -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c bundlegen -s h -l help -d 'Print help (see more with \'--help\')'
complete -c bundlegen -s V -l version -d 'Print version'
