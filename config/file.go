package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Load reads and strictly decodes the TOML file at path. It does not
// validate: call Validate once flags have been applied.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse strictly decodes a TOML document; path is used in error messages.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{Path: path}
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, decodeError(path, err)
	}
	for key, line := range keyLines(data) {
		c.setOrigin(key, fmt.Sprintf("%s:%d", path, line))
	}
	return c, nil
}

// decodeError turns go-toml's errors into one line naming the file, line
// and key.
func decodeError(path string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		line, _ := e.Position()
		return fmt.Errorf("config: %s:%d: %s: %w", path, line, strings.Join(e.Key(), "."),
			wrapInvalid(errors.New("unknown key")))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("config: %s:%d: %s: %w", path, line, strings.Join(k, "."), wrapInvalid(errors.New(msg)))
		}
		return fmt.Errorf("config: %s:%d: %w", path, line, wrapInvalid(errors.New(msg)))
	}
	return fmt.Errorf("config: %s: %w", path, wrapInvalid(err))
}

// keyLines maps every key of a well-formed document to its line, with array
// tables indexed as Validate names them ("listen[1].address").
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	counts := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		var parts []string
		line := 0
		it := e.Key()
		for it.Next() {
			k := it.Node()
			if line == 0 {
				line = p.Shape(k.Raw).Start.Line
			}
			parts = append(parts, string(k.Data))
		}
		key := strings.Join(parts, ".")
		switch e.Kind {
		case unstable.Table:
			prefix = key
		case unstable.ArrayTable:
			prefix = fmt.Sprintf("%s[%d]", key, counts[key])
			counts[key]++
		case unstable.KeyValue:
			if prefix != "" {
				key = prefix + "." + key
			}
		default:
			continue
		}
		lines[key] = line
		if e.Kind == unstable.ArrayTable {
			lines[prefix] = line
		}
	}
	return lines
}
