module github.com/batonhq/baton

go 1.26.0

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/pelletier/go-toml/v2 v2.4.3
	golang.org/x/sys v0.50.0
)
