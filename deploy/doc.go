// Package deploy holds no code: it carries the deployment files of the collector (systemd unit,
// container image, Kubernetes manifests, Prometheus alerts, Grafana dashboard, ClickHouse
// cluster configuration, wrk script and runbook) and the tests that check them against the
// real tools installed here (promtool, systemd-analyze, wrk) and against each other.
package deploy
