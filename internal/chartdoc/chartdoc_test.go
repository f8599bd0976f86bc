package chartdoc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRows(t *testing.T) {
	values := `# The file's own header.

# -- A name.
name: ""
group:
  # -- Whether it is on.
  # Continued here.
  enabled: true
  # A plain comment is not documentation,
  # -- but a later marked block is.
  port: 9400
# -- A documented map: its children need no comment.
resources:
  requests: {cpu: 100m}
  limits:
    memory: 1Gi
list:
  # -- Items, with a | in the text.
  items: [a, 1]
`
	rows, err := Rows([]byte(values))
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{Key: "name", Default: `""`, Description: "A name."},
		{Key: "group.enabled", Default: "true", Description: "Whether it is on. Continued here."},
		{Key: "group.port", Default: "9400", Description: "but a later marked block is."},
		{Key: "resources", Default: `{"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}`, Description: "A documented map: its children need no comment."},
		{Key: "list.items", Default: `["a", 1]`, Description: "Items, with a | in the text."},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s", diff)
	}
	table := Table(rows)
	if !strings.Contains(table, "| `list.items` | `[\"a\", 1]` | Items, with a \\| in the text. |") {
		t.Errorf("table does not escape |:\n%s", table)
	}
}

func TestRowsRejectsUndocumented(t *testing.T) {
	_, err := Rows([]byte("# -- Fine.\na: 1\nb:\n  c: 2\n"))
	if err == nil || !strings.Contains(err.Error(), "b.c") {
		t.Errorf("err = %v, want one naming b.c", err)
	}
}

func TestReplace(t *testing.T) {
	readme := "# x\n" + Begin + "\nold\n" + End + "\ntail\n"
	got, err := Replace(readme, Begin+"\nnew\n"+End)
	if err != nil {
		t.Fatal(err)
	}
	if got != "# x\n"+Begin+"\nnew\n"+End+"\ntail\n" {
		t.Errorf("got %q", got)
	}
	if _, err := Replace("no markers", "t"); err == nil {
		t.Error("a README without markers was accepted")
	}
}
