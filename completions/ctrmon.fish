complete -c ctrmon -l bundle -d 'Bundle directory of the container' -r -F
complete -c ctrmon -l id -d 'Container id' -r
complete -c ctrmon -l log-level -d 'Diagnostics level on stderr: error, warn, info, debug or trace' -r
complete -c ctrmon -l log-format -d 'Diagnostics format on stderr' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c ctrmon -s v -l verbose -d 'More diagnostics (-v info, -vv debug, -vvv trace)'
complete -c ctrmon -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ctrmon -s V -l version -d 'Print version'
