# A Rack app for baton's Puma recipe (standard library and Rack only): it
# answers every request with "hello from pid N" and an X-Pid header.
#
#   baton run --listen http=tcp://127.0.0.1:8080 --ready fd -- \
#       puma -C contrib/ruby/baton.rb contrib/ruby/config.ru
#
# It carries no drain of its own: contrib/ruby/baton.rb is the whole
# recipe, and the suite also runs this app on a stock Puma to measure what
# that loses at a reload (docs/languages.md).
run lambda { |env|
  pid = Process.pid.to_s # at each request: a forked Puma worker has its own
  body = "hello from pid #{pid}\n"
  [200, { "content-type" => "text/plain; charset=utf-8", "content-length" => body.bytesize.to_s, "x-pid" => pid }, [body]]
}
