// Package deploy holds the tests of the deployment kit: Kubernetes
// manifests (as kustomize builds them) and the Helm chart decoded strictly
// into their API types, the alert rules and their generated copies, the
// dashboard, the container user's access to the mounted token, and an
// end-to-end run of a real Prometheus server against the exporter with the
// rules and the dashboard's queries. It is its own module so that the
// Kubernetes, prometheus-operator and kustomize packages stay out of the
// exporter's dependencies.
package deploy

// The alert rules have one source, prometheus/alerts.yml; the Helm chart's
// copy and kubernetes/prometheusrule.yaml are generated from it.
//go:generate go run ./cmd/genrules
