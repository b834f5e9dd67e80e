"""Real-time monitoring over the event stream: the rule engine (``engine``), and the Prometheus
alerting rules and Grafana dashboard shipped for a testnet (``dashboards``, the files next to
it). The daemon never imports this folder; ``suanpan monitor`` runs it as a client."""
