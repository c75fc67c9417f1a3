// Package deploy holds the tests of the deployment kit: Kubernetes
// manifests and the Helm chart decoded strictly into their API types, the
// alert rules, and an end-to-end run of a real Prometheus server against
// the exporter with the rules and the dashboard's queries. It is its own
// module so that the Kubernetes and prometheus-operator types stay out of
// the exporter's dependencies.
package deploy
