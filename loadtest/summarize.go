package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

type resultLine struct {
	Scenario string             `json:"scenario"`
	Target   string             `json:"target"`
	Params   map[string]any     `json:"params"`
	Metrics  map[string]float64 `json:"metrics"`
	Units    map[string]string  `json:"units"`
	Order    []string           `json:"order"`
}

// summarizeMain prints one markdown table per scenario and parameter set,
// with a column per target and, for two targets, their ratio.
func summarizeMain(args []string) int {
	var readers []io.Reader
	if len(args) == 0 {
		readers = append(readers, os.Stdin)
	}
	for _, a := range args {
		f, err := os.Open(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, "summarize:", err)
			return 1
		}
		defer f.Close()
		readers = append(readers, f)
	}
	var results []resultLine
	for _, r := range readers {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var rl resultLine
			if json.Unmarshal([]byte(line), &rl) == nil && rl.Scenario != "" && rl.Metrics != nil {
				results = append(results, rl)
			}
		}
	}
	summarize(os.Stdout, results)
	return 0
}

func summarize(w io.Writer, results []resultLine) {
	type group struct {
		title   string
		targets []string
		rows    map[string]resultLine
	}
	var groups []*group
	byTitle := map[string]*group{}
	for _, r := range results {
		title := r.Scenario
		for _, k := range sortedKeys(r.Params) {
			if k == "procs" {
				continue
			}
			title += fmt.Sprintf(" %s=%v", k, r.Params[k])
		}
		g := byTitle[title]
		if g == nil {
			g = &group{title: title, rows: map[string]resultLine{}}
			byTitle[title] = g
			groups = append(groups, g)
		}
		if _, dup := g.rows[r.Target]; !dup {
			g.targets = append(g.targets, r.Target)
		}
		g.rows[r.Target] = r
	}
	for _, g := range groups {
		fmt.Fprintf(w, "\n#### %s\n\n| metric |", g.title)
		for _, t := range g.targets {
			fmt.Fprintf(w, " %s |", t)
		}
		ratio := len(g.targets) == 2
		if ratio {
			fmt.Fprintf(w, " %s / %s |", g.targets[0], g.targets[1])
		}
		fmt.Fprintf(w, "\n|---|")
		for range g.targets {
			fmt.Fprintf(w, "---:|")
		}
		if ratio {
			fmt.Fprintf(w, "---:|")
		}
		fmt.Fprintln(w)
		var order []string
		seen := map[string]bool{}
		for _, t := range g.targets {
			for _, m := range g.rows[t].Order {
				if !seen[m] {
					seen[m] = true
					order = append(order, m)
				}
			}
		}
		for _, m := range order {
			unit := ""
			for _, t := range g.targets {
				if u := g.rows[t].Units[m]; u != "" {
					unit = " (" + u + ")"
				}
			}
			fmt.Fprintf(w, "| %s%s |", m, unit)
			var vals []float64
			for _, t := range g.targets {
				v, ok := g.rows[t].Metrics[m]
				if ok {
					fmt.Fprintf(w, " %s |", formatNum(v))
				} else {
					fmt.Fprintf(w, " – |")
				}
				vals = append(vals, v)
			}
			if ratio {
				if vals[1] != 0 && vals[0] != 0 {
					fmt.Fprintf(w, " %.2f |", vals[0]/vals[1])
				} else {
					fmt.Fprintf(w, " – |")
				}
			}
			fmt.Fprintln(w)
		}
	}
}
