package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/idemsql/idemsql/idemsql"
)

// galeraDSNs returns the go-sql-driver DSNs of the three nodes of a MariaDB
// Galera cluster, from IDEMSQL_GALERA_DSNS, each with parseTime=true. There
// is no container to fall back on: `bash .ci/galera start` starts a cluster
// on loopback and prints the variable.
func galeraDSNs(t testing.TB) []string {
	t.Helper()
	v := os.Getenv(envGaleraDSNs)
	if v == "" {
		missingDB(t, envGaleraDSNs, fmt.Sprintf("no MariaDB Galera cluster for integration tests: "+
			"set %s to the DSNs of its three nodes, comma-separated; `bash .ci/galera start` "+
			"(or `make galera-up`) starts one on loopback and prints the line", envGaleraDSNs))
	}
	dsns := strings.Split(v, ",")
	if len(dsns) != 3 {
		t.Fatalf("%s has %d DSNs, want the three nodes of a cluster", envGaleraDSNs, len(dsns))
	}
	for i, dsn := range dsns {
		dsns[i] = withParseTime(t, envGaleraDSNs, strings.TrimSpace(dsn))
	}
	return dsns
}

// setupGalera is setupMySQL on node 1 of the cluster: the whole suite runs
// there, as it would on one server.
func setupGalera(t *testing.T, opts ...idemsql.Options) *env {
	return setupMySQLAt(t, galeraDSNs(t)[0], opts...)
}

// TestGaleraClusterSynced checks that the cluster the tests use has three
// nodes, each ready and synced: with fewer the cross-node tests would prove
// nothing.
func TestGaleraClusterSynced(t *testing.T) {
	for i, dsn := range galeraDSNs(t) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatalf("open node %d: %v", i+1, err)
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		status := map[string]string{}
		rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_ready', 'wsrep_local_state_comment')")
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		for rows.Next() {
			var name, value string
			if err := rows.Scan(&name, &value); err != nil {
				t.Fatal(err)
			}
			status[name] = value
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if status["wsrep_cluster_size"] != "3" || status["wsrep_ready"] != "ON" || status["wsrep_local_state_comment"] != "Synced" {
			t.Fatalf("node %d is not a synced member of a three-node cluster: %v", i+1, status)
		}
	}
}
