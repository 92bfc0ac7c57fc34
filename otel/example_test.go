package idemotel_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/idemsql/idemsql/idemsql"
	"github.com/idemsql/idemsql/idemsqlite"
	"github.com/idemsql/idemsql/migrations"
	idemotel "github.com/idemsql/idemsql/otel"
)

// A Prometheus user gets idemsql's metrics through the OpenTelemetry
// Prometheus exporter; serve reg with promhttp.HandlerFor as usual.
func Example_prometheus() {
	reg := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		panic(err)
	}
	obs, err := idemotel.New(idemotel.Config{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))})
	if err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "idemotel-")
	defer os.RemoveAll(dir)
	db, _ := sql.Open("sqlite", idemsqlite.DSN(filepath.Join(dir, "app.db")))
	defer db.Close()
	store, err := idemsql.New(idemsqlite.New(db), idemsql.Options{Observers: []idemsql.Observer{obs}})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	if err := migrations.Up(ctx, db, store); err != nil {
		panic(err)
	}
	for range 3 { // one execution, two replays
		if _, err := idemsql.Run(ctx, store, "invoice-7", func(ctx context.Context, tx *sql.Tx) (int, error) {
			return 7, nil
		}); err != nil {
			panic(err)
		}
	}

	families, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var lines []string
	for _, f := range families {
		if f.GetName() != "idemsql_calls_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %v", f.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue()))
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// idemsql_calls_total{db_system_name=sqlite,idemsql_operation=Run,idemsql_outcome=executed} 1
	// idemsql_calls_total{db_system_name=sqlite,idemsql_operation=Run,idemsql_outcome=replayed} 2
}
