// Package check holds the test of contrib/kubernetes/app.yaml: every
// object decodes strictly with Kubernetes' own API types, the pod passes
// the Pod Security "restricted" profile as Kubernetes' own admission code
// evaluates it, the grace period covers stop.delay and the drain, the
// probes wait for baton's verdicts, the image instructions of the header
// agree with the Deployment, and the ConfigMap's baton.toml passes
// `baton check`.
//
// It is a module of its own so that Kubernetes' modules never enter
// baton's go.mod; `make test` runs it after baton's suite.
package check
