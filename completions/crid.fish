complete -c crid -l listen -d 'Where to listen' -r
complete -c crid -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c crid -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c crid -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c crid -s h -l help -d 'Print help (see more with \'--help\')'
complete -c crid -s V -l version -d 'Print version'
