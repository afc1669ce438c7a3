package spawn

import (
	"reflect"
	"testing"
)

// A worker's environment never carries systemd's variables meant for
// baton; it gets its own LISTEN_FDS and LISTEN_FDNAMES in listener order.
func TestEnv(t *testing.T) {
	base := []string{
		"PATH=/bin", "LISTEN_FDS=5", "LISTEN_FDNAMES=a:b", "LISTEN_PID=1",
		"NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1000", "WATCHDOG_PID=1",
		"JOURNAL_STREAM=8:123", "HOME=/root", "LISTEN_FDSX=kept",
		"APP_ENV=dev", "BATON_WORKER=7", "BATON_OTHER=x",
	}
	got := Env(base, []string{"NOTIFY_SOCKET=/run/baton/notify.sock", "APP=1", "APP_ENV=prod", "BATON_WORKER=0"},
		[]File{{Name: "http", Fd: 7}, {Name: "admin", Fd: 9}})
	// The configuration wins over baton's own environment, once per key.
	want := []string{
		"PATH=/bin", "HOME=/root", "LISTEN_FDSX=kept",
		"NOTIFY_SOCKET=/run/baton/notify.sock", "APP=1", "APP_ENV=prod", "BATON_WORKER=0",
		"LISTEN_FDS=2", "LISTEN_FDNAMES=http:admin",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Env =\n%q\nwant\n%q", got, want)
	}
}
