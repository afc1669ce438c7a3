# baton.rb: a Puma config file (Puma 5 or newer, no gem beyond Puma) that
# runs a stock Puma under baton without losing a request at a reload:
#
#   baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- \
#       puma -C contrib/ruby/baton.rb config.ru
#
# Single mode. baton runs the pool (worker.count) and replaces it at a
# reload, so each baton worker is one Puma process with its thread pool.
# Puma's cluster mode would put a second process manager under baton, and
# its workers drain with the stock behaviour below; this file refuses it.
#
# Socket: baton's listeners by socket activation (LISTEN_FDS), which Puma
# understands by itself; bind_to_activated_sockets "only" makes them the
# only binds. Ruby makes the shared socket non-blocking, as Go and Node do.
#
# Readiness: once Puma serves (on_booted: the app is loaded and the thread
# pool runs), a line on BATON_READY_FD (worker.ready = "fd") and READY=1
# on NOTIFY_SOCKET (worker.ready = "notify"). Stock Puma needs the
# sd_notify gem for the latter; this file sends it itself, and takes
# NOTIFY_SOCKET away from Puma so that it is sent once.
#
# Drain. A stock Puma told to stop (SIGTERM, Puma::Server#handle_servers)
# stops accepting and shuts its reactor down, which closes at once every
# connection waiting there for a request: idle keep-alive connections, on
# which the client may be sending its next request right then, and
# accepted ones whose request has not arrived yet. A thread that has just
# answered a keep-alive request closes the connection too, if no next
# request is already there. Those requests fail (EOF or reset). Here, on
# SIGTERM or SIGINT:
#   1. STOPPING=1; every response from now on carries "Connection: close"
#      (Puma reads the request's Connection header once the app has
#      answered; this sets it), so Puma closes the connection after it;
#   2. IDLE_GRACE later, Puma's own stop, as stock: it stops accepting;
#      a connection answered before the drain has sent its next request
#      or been idle that long;
#   3. the reactor's shutdown waits, up to IDLE_GRACE, until no
#      connection is left in it: one whose request arrives meanwhile is
#      answered; one still silent after the grace is closed, as stock.
# Puma's force_shutdown_after follows BATON_DRAIN_TIMEOUT (a Go duration
# set by baton), ending what is left before baton's SIGKILL.

require "socket"

module Baton
  IDLE_GRACE = 1.0 # seconds

  # The drain's state, read by every request's thread.
  @draining = false
  class << self
    attr_accessor :draining
  end

  UNITS = { "ns" => 1e-9, "us" => 1e-6, "µs" => 1e-6, "ms" => 1e-3, "s" => 1, "m" => 60, "h" => 3600 }.freeze
  PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/

  # Seconds in a Go duration ("30s", "1m30s", "500ms"), or nil.
  def self.parse_duration(s)
    return nil unless s && s =~ /\A(?:#{PART})+\z/

    s.scan(PART).sum { |n, u| n.to_f * UNITS[u] }
  end

  def self.log(msg)
    $stderr.puts "puma: #{msg}"
  end

  # Taken from Puma at load time (see the file's comment).
  @notify_socket = ENV.delete("NOTIFY_SOCKET")

  def self.notify(state)
    return unless @notify_socket

    path = @notify_socket.start_with?("@") ? "\0#{@notify_socket[1..]}" : @notify_socket
    Socket.open(:UNIX, :DGRAM) { |s| s.send(state, 0, Socket.sockaddr_un(path)) }
  rescue SystemCallError => e
    log "notify #{state}: #{e.message}"
  end

  def self.ready
    fd = ENV.delete("BATON_READY_FD")
    if fd =~ /\A\d+\z/
      begin
        IO.for_fd(fd.to_i, autoclose: true).tap { |io| io.write("READY=1\n") }.close
      rescue SystemCallError, ArgumentError => e
        log "readiness descriptor #{fd}: #{e.message}"
      end
    end
    notify("READY=1")
  end

  # On SIGTERM or SIGINT: step 1 now, Puma's own handler (step 2) after
  # the grace. More of them meanwhile are ignored (under systemd's default
  # KillMode=control-group a worker gets SIGTERM from systemd and baton).
  def self.trap_stop_signals
    %w[TERM INT].each do |sig|
      puma_handler = nil
      puma_handler = Signal.trap(sig) do
        next if draining

        self.draining = true
        notify("STOPPING=1")
        Thread.new do
          sleep IDLE_GRACE
          Signal.trap(sig, puma_handler)
          Process.kill(sig, Process.pid)
        end
      end
    end
  end

  # Step 1: prepended to the middleware Puma puts around every app.
  module CloseOnDrain
    def call(env)
      response = super
      env["HTTP_CONNECTION"] = "close" if Baton.draining
      response
    end
  end

  # Step 3: prepended to Puma's reactor, which holds the connections that
  # wait for a request.
  module ReactorGrace
    def shutdown
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + IDLE_GRACE
      until @input.empty? && @timeouts.empty?
        break if Process.clock_gettime(Process::CLOCK_MONOTONIC) >= deadline

        sleep 0.01
      end
      super
    end
  end

  # The plugin: readiness once Puma serves, then the drain's signals.
  class Plugin < Puma::Plugin
    def start(launcher)
      if launcher.options[:workers].to_i > 0
        abort "puma: baton.rb runs Puma in single mode (baton runs the pool): drop --workers / workers #{launcher.options[:workers]}"
      end
      launcher.events.on_booted do
        log_listeners(launcher)
        Baton.ready
        Baton.trap_stop_signals
      end
    end

    def log_listeners(launcher)
      Baton.log "serving on #{launcher.options[:binds].join(', ')} pid #{Process.pid}"
    end
  end
end

Puma::Configuration::ConfigMiddleware.prepend(Baton::CloseOnDrain)
require "puma/reactor"
Puma::Reactor.prepend(Baton::ReactorGrace)
Puma::Plugins.register("baton", Baton::Plugin)

workers 0
bind_to_activated_sockets "only"
plugin :baton
# Exit 0 once drained, rather than by re-raising SIGTERM.
raise_exception_on_sigterm false

drain = Baton.parse_duration(ENV["BATON_DRAIN_TIMEOUT"])
force_shutdown_after [drain - 2 * Baton::IDLE_GRACE - 0.5, 1].max if drain
