"""What a person or a monitoring system sees of a run: `standard` (the outputs a run asks for
by its options, for the command line and Python callers alike), `progress` (the progress view
and the summary table), `metrics` (Prometheus: a server, a textfile, a Pushgateway), `notify`
(the --notify POST), `confirm` (the question asked on a terminal before deleting). Each
library is imported only when its output is asked for."""
