package control

import "time"

// Status is what `baton status` shows: baton itself, then each worker.
// Its JSON is documented in docs/control.md.
type Status struct {
	At      time.Time `json:"at"` // when it was read
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	// Config is the configuration's file ("" for flags alone), Unit the
	// systemd service baton runs in ("" outside one).
	Config     string    `json:"config"`
	Unit       string    `json:"unit"`
	Started    time.Time `json:"started"`
	Phase      string    `json:"phase"`
	Ready      bool      `json:"ready"`
	StopIn     float64   `json:"stop_in_seconds"` // phase "lame duck": seconds until the drain, else 0
	Generation int       `json:"generation"`
	// TargetWorkers is the count of workers the pool is kept at now:
	// ConfigWorkers (worker.count), or the count `baton scale` set.
	TargetWorkers int    `json:"target_workers"`
	ConfigWorkers int    `json:"config_workers"`
	Balance       string `json:"balance"` // the mode in force
	// BalanceAuto is why worker.balance = "auto" chose Balance; empty
	// when the configuration named the mode.
	BalanceAuto string           `json:"balance_auto,omitempty"`
	Listeners   []StatusListener `json:"listeners"`
	Budget      StatusBudget     `json:"restart_budget"`
	LastReload  *StatusReload    `json:"last_reload,omitempty"`
	Workers     []StatusWorker   `json:"workers"`
}

// StatusListener is a socket the workers serve on.
type StatusListener struct {
	Name    string `json:"name"`
	Address string `json:"address"` // where it is bound, as a listen URL
}

// StatusBudget is the restart budget: Used restarts within the window,
// of Limit.
type StatusBudget struct {
	Used          int     `json:"used"`
	Limit         int     `json:"limit"`
	WindowSeconds float64 `json:"window_seconds"`
	Spent         bool    `json:"spent"`
}

// StatusReload is the last reload's outcome.
type StatusReload struct {
	At    time.Time `json:"at"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// StatusWorker is one live worker process.
type StatusWorker struct {
	Slot       int `json:"slot"`
	PID        int `json:"pid"`
	Generation int `json:"generation"`
	// TargetWorkers is the count of workers the pool is kept at now:
	// ConfigWorkers (worker.count), or the count `baton scale` set.
	TargetWorkers int       `json:"target_workers"`
	ConfigWorkers int       `json:"config_workers"`
	State         string    `json:"state"` // starting, ready, draining or stopping
	Started       time.Time `json:"started"`
	Restarts      int       `json:"restarts"`    // unplanned restarts of its slot
	CPUSeconds    float64   `json:"cpu_seconds"` // user and system time so far
	RSSBytes      int64     `json:"rss_bytes"`
	Status        string    `json:"status,omitempty"` // its last STATUS=
}
