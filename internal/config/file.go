package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strings"
	"syscall"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"

	"github.com/batonhq/baton/internal/excerpt"
)

// MaxFileSize is the largest configuration file baton reads. A TOML
// configuration is a few kilobytes; this leaves room for the largest
// value exec takes (128 KiB) twice over. It also bounds what an error in
// a huge line costs: go-toml builds its error text at some 17 bytes of
// garbage per byte of the line, which a larger file would let reach
// hundreds of megabytes.
const MaxFileSize = 256 << 10

// Load reads (ReadFile) and strictly decodes the TOML file at path. It
// does not validate: call Validate once flags have been applied.
func Load(path string) (*Config, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// ReadFile reads the configuration file at path, which must be a regular
// file of at most MaxFileSize bytes. Every command that reads the file
// does it here. A FIFO, a device or a directory is refused without being
// read, and without waiting: the open does not block for a FIFO's
// writer. At most one byte past the limit is read, whatever size the
// file claims.
func ReadFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("config: %s: not a regular file but %s", path, fileKind(fi.Mode()))
	}
	if fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("config: %s: %d bytes, %w", path, fi.Size(), errTooLarge)
	}
	// Room for the size the file claims, and the read that sees its end.
	buf := bytes.NewBuffer(make([]byte, 0, fi.Size()+bytes.MinRead))
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if buf.Len() > MaxFileSize {
		return nil, fmt.Errorf("config: %s: %w", path, errTooLarge)
	}
	return buf.Bytes(), nil
}

// errTooLarge is wrapped by the error for a file past MaxFileSize.
var errTooLarge = fmt.Errorf("more than the %d KiB a configuration file may have", MaxFileSize>>10)

// fileKind names what a file that is not a regular one is.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "of type " + m.Type().String()
}

// Parse strictly decodes a TOML document; path is used in error messages.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{Path: path}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(c)
	// go-toml takes 30 for 30ns, and fails on 1.5 without saying where.
	doc := scan(data)
	if b := doc.bareDuration; b.key != "" {
		return nil, fmt.Errorf("config: %s:%d: %s: %w", path, b.line, excerpt.Clip(b.key), wrapInvalid(noUnit(b.value)))
	}
	if err != nil {
		return nil, decodeError(path, data, err)
	}
	for key, line := range doc.lines {
		c.setOrigin(key, fmt.Sprintf("%s:%d", path, line))
	}
	return c, nil
}

// errNoUnit is wrapped by the error for a duration without a unit.
var errNoUnit = errors.New("has no unit")

// noUnit says how to write a duration given as a bare number.
func noUnit(value string) error {
	if len(value) <= excerpt.Max && strings.Trim(value, "0123456789.") == "" {
		return fmt.Errorf("%s %w: write \"%ss\"", value, errNoUnit, value)
	}
	return fmt.Errorf("%s %w: write a duration such as \"30s\"", excerpt.Clip(value), errNoUnit)
}

// decodeError turns go-toml's errors into one line naming the file, line
// and key. go-toml names a key inside a table by its last part alone
// ("count" for worker.count); the key is completed from the line. Keys
// are clipped, in go-toml's message too ("key x is already defined").
func decodeError(path string, data []byte, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		line, _ := e.Position()
		return fmt.Errorf("config: %s:%d: %s: %w", path, line, excerpt.Clip(strings.Join(e.Key(), ".")),
			wrapInvalid(errors.New("unknown key")))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		for _, part := range de.Key() {
			if len(part) > excerpt.Max {
				msg = strings.ReplaceAll(msg, part, excerpt.Clip(part))
			}
		}
		msg = excerpt.Cut(msg, maxMessage)
		if k := de.Key(); len(k) > 0 {
			key := strings.Join(k, ".")
			if full := scan(data).keyAt[line]; strings.HasSuffix(full, key) {
				key = full
			}
			return fmt.Errorf("config: %s:%d: %s: %w", path, line, excerpt.Clip(key), wrapInvalid(errors.New(msg)))
		}
		return fmt.Errorf("config: %s:%d: %w", path, line, wrapInvalid(errors.New(msg)))
	}
	if msg := err.Error(); len(msg) > maxMessage {
		err = errors.New(excerpt.Cut(msg, maxMessage))
	}
	return fmt.Errorf("config: %s: %w", path, wrapInvalid(err))
}

// maxMessage is how much of go-toml's own message an error keeps.
const maxMessage = 4 * excerpt.Max

// document is what scan finds in a TOML document, beyond what decoding it
// into a Config tells.
type document struct {
	// lines maps every key to its line, with array tables indexed as
	// Validate names them ("listen[1].address").
	lines map[string]int
	// keyAt is the full key of the key/value pair on each line.
	keyAt map[int]string
	// bareDuration is the first duration key given a number other than 0
	// (go-toml would decode 30 as 30 nanoseconds).
	bareDuration struct {
		key, value string
		line       int
	}
}

// scan walks a document that go-toml could parse (its syntax, if not its
// meaning: a duplicate key is still scanned).
func scan(data []byte) document {
	doc := document{lines: map[string]int{}, keyAt: map[int]string{}}
	counts := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	// value records a key/value pair, and those of an inline table.
	var value func(key string, line int, v *unstable.Node)
	value = func(key string, line int, v *unstable.Node) {
		doc.lines[key] = line
		doc.keyAt[line] = key
		switch v.Kind {
		case unstable.InlineTable:
			it := v.Children()
			for it.Next() {
				kv := it.Node()
				k, l := joinKey(&p, kv.Key())
				value(key+"."+k, l, kv.Value())
			}
		case unstable.Integer, unstable.Float:
			if durationKeys[key] && string(v.Data) != "0" && doc.bareDuration.key == "" {
				doc.bareDuration.key, doc.bareDuration.value, doc.bareDuration.line = key, string(v.Data), line
			}
		}
	}
	for p.NextExpression() {
		e := p.Expression()
		key, line := joinKey(&p, e.Key())
		switch e.Kind {
		case unstable.Table:
			prefix = key
			doc.lines[key] = line
		case unstable.ArrayTable:
			prefix = fmt.Sprintf("%s[%d]", key, counts[key])
			counts[key]++
			doc.lines[key] = line
			doc.lines[prefix] = line
		case unstable.KeyValue:
			if prefix != "" {
				key = prefix + "." + key
			}
			value(key, line, e.Value())
		}
	}
	return doc
}

// joinKey returns a (possibly dotted) key as one string, and its line.
func joinKey(p *unstable.Parser, it unstable.Iterator) (string, int) {
	var parts []string
	line := 0
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return strings.Join(parts, "."), line
}

// durationKeys are the keys whose values are Durations, from Config's
// toml tags: "worker.drain_timeout", "reload.timeout", ...
var durationKeys = func() map[string]bool {
	keys := map[string]bool{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			switch {
			case f.Type == reflect.TypeFor[Duration]():
				keys[prefix+name] = true
			case f.Type.Kind() == reflect.Struct:
				walk(prefix+name+".", f.Type)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
	return keys
}()
