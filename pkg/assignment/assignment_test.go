package assignment

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Assignment
		wantErr string
	}{
		{name: "whole and share", in: `{"main":[{"uuid":"GPU-a","percent":100},{"uuid":"GPU-b","percent":100}],"side":[{"uuid":"GPU-c","percent":30}]}`,
			want: Assignment{"main": {{"GPU-a", 100}, {"GPU-b", 100}}, "side": {{"GPU-c", 30}}}},
		{name: "empty", in: "  ", wantErr: "is empty"},
		{name: "not json", in: "GPU-a", wantErr: "not valid"},
		{name: "null", in: "null", wantErr: "is null"},
		{name: "trailing", in: `{"a":[{"uuid":"x","percent":1}]} {}`, wantErr: "trailing data"},
		{name: "unknown field", in: `{"a":[{"uuid":"x","percent":1,"mem":3}]}`, wantErr: "unknown field"},
		{name: "zero percent", in: `{"a":[{"uuid":"x","percent":0}]}`, wantErr: "percent must be 1-100"},
		{name: "over 100", in: `{"a":[{"uuid":"x","percent":101}]}`, wantErr: "percent must be 1-100"},
		{name: "no uuid", in: `{"a":[{"uuid":"","percent":10}]}`, wantErr: "without uuid"},
		{name: "no devices", in: `{"a":[]}`, wantErr: "has no devices"},
		{name: "bad container", in: `{"Main_1":[{"uuid":"x","percent":10}]}`, wantErr: "container name"},
		{name: "device twice", in: `{"a":[{"uuid":"x","percent":10},{"uuid":"x","percent":10}]}`, wantErr: "twice"},
		{name: "wrong type", in: `{"a":{"uuid":"x"}}`, wantErr: "not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got.String() != tt.want.String() {
				t.Errorf("Parse(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestStringRoundTrip(t *testing.T) {
	a := Assignment{"z": {{"GPU-2", 40}}, "a": {{"GPU-1", 100}}}
	s := a.String()
	if s != `{"a":[{"uuid":"GPU-1","percent":100}],"z":[{"uuid":"GPU-2","percent":40}]}` {
		t.Fatalf("String() = %s; keys must be sorted", s)
	}
	back, err := Parse(s)
	if err != nil || back.String() != s {
		t.Fatalf("round trip: %v, %v", back, err)
	}
}

// FuzzParse checks that no input panics the parser and that whatever it
// accepts is valid and encodes to something it accepts again unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"main":[{"uuid":"GPU-a","percent":100}]}`,
		`{"a":[{"uuid":"x","percent":30}],"b":[{"uuid":"y","percent":70}]}`,
		`{}`, `null`, `[]`, `{"a":null}`, `{"a":[{"uuid":"x","percent":-1}]}`, `{"a":[{"percent":1e400}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		a, err := Parse(in)
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate says %v", in, err)
		}
		again, err := Parse(a.String())
		if err != nil || again.String() != a.String() {
			t.Fatalf("re-parse of %s: %v", a, err)
		}
	})
}
