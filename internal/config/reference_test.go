package config

import (
	"flag"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// reference is the configuration's reference for users.
const reference = "../../docs/config.md"

// The keys and flags are one list that the code and the reference must
// agree on: the reference's key table names every TOML key of Config and
// no other, its flag table every flag of `baton run` and no other, its
// prose names no key or flag that does not exist, and its example
// decodes strictly.
func TestReferenceNamesEveryKeyAndFlag(t *testing.T) {
	b, err := os.ReadFile(reference)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)

	keys := tomlKeys(reflect.TypeFor[Config](), "")
	var flags []string
	newRunFlags(io.Discard).fs.VisitAll(func(f *flag.Flag) { flags = append(flags, "--"+f.Name) })

	tables := firstColumns(doc)
	same(t, "key table", tables["key"], keys)
	same(t, "flag table", tables["flag"], flags)

	// In the prose too, a key of a known section or a flag must exist.
	sections := map[string]bool{}
	for _, k := range keys {
		sections[k[:strings.Index(k, ".")]] = true
	}
	for _, code := range quoted(withoutFences(doc)) {
		word := strings.Fields(code)[0]
		section, _, isKey := strings.Cut(word, ".")
		switch {
		case strings.HasPrefix(word, "--") && len(word) > 2 && !slices.Contains(flags, word):
			t.Errorf("%s names %s, which is no flag of baton run", reference, word)
		case isKey && sections[section] && code == word && !slices.Contains(keys, word):
			t.Errorf("%s names %s, which is no configuration key", reference, word)
		}
	}

	example := regexp.MustCompile("(?s)```toml\n(.*?)```").FindStringSubmatch(doc)
	if example == nil {
		t.Fatalf("%s has no ```toml example", reference)
	}
	if _, err := Parse("docs/config.md", []byte(example[1])); err != nil {
		t.Errorf("the example does not decode: %v", err)
	}
}

// tomlKeys lists the keys of a TOML table decoded into t: "section.key",
// and "section[].key" for an array of tables.
func tomlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		switch {
		case f.Type.Kind() == reflect.Struct:
			keys = append(keys, tomlKeys(f.Type, prefix+name+".")...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			keys = append(keys, tomlKeys(f.Type.Elem(), prefix+name+"[].")...)
		default:
			keys = append(keys, prefix+name)
		}
	}
	return keys
}

// firstColumns returns, for each table of doc by the title of its first
// column, the words in backquotes in that column ("`--ready MODE`" gives
// "--ready").
func firstColumns(doc string) map[string][]string {
	cols := map[string][]string{}
	title := ""
	for line := range strings.Lines(doc) {
		cells := strings.Split(line, "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 3 {
			title = ""
			continue
		}
		first := strings.TrimSpace(cells[1])
		switch {
		case title == "":
			title = first
		case strings.Trim(first, "-: ") == "":
		default:
			for _, code := range quoted(first) {
				cols[title] = append(cols[title], strings.Fields(code)[0])
			}
		}
	}
	return cols
}

var codeSpan = regexp.MustCompile("`([^`\n]+)`")

// quoted returns what s has in backquotes.
func quoted(s string) []string {
	var out []string
	for _, m := range codeSpan.FindAllStringSubmatch(s, -1) {
		if strings.TrimSpace(m[1]) != "" {
			out = append(out, m[1])
		}
	}
	return out
}

// withoutFences returns doc without its fenced code blocks.
func withoutFences(doc string) string {
	return regexp.MustCompile("(?s)```.*?```").ReplaceAllString(doc, "")
}

// same reports what one of the lists has and the other has not.
func same(t *testing.T, what string, doc, code []string) {
	t.Helper()
	for _, k := range code {
		if !slices.Contains(doc, k) {
			t.Errorf("%s: the %s lacks %s", reference, what, k)
		}
	}
	for _, k := range doc {
		if !slices.Contains(code, k) {
			t.Errorf("%s: the %s names %s, which does not exist", reference, what, k)
		}
	}
}
