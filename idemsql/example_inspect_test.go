package idemsql_test

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/idemsql/idemsql/idemsql"
)

func ExampleLookup() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()

	type Order struct {
		ID    int64 `json:"id"`
		Total int64 `json:"total"`
	}
	if _, err := idemsql.Run(ctx, store, "order:42", func(ctx context.Context, tx *sql.Tx) (Order, error) {
		res, err := tx.ExecContext(ctx, `INSERT INTO orders (total) VALUES (1999)`)
		if err != nil {
			return Order{}, err
		}
		id, err := res.LastInsertId()
		return Order{ID: id, Total: 1999}, err
	}); err != nil {
		fmt.Println(err)
		return
	}

	r, found, err := idemsql.Lookup(ctx, store, "order:42")
	if err != nil || !found {
		fmt.Println(found, err)
		return
	}
	var o Order
	if err := r.Decode(&o); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Status, r.Attempt, r.Lease, r.Expired, string(r.Result))
	fmt.Printf("order %d, total %d\n", o.ID, o.Total)

	_, found, err = idemsql.Lookup(ctx, store, "order:43")
	fmt.Println("order:43 found:", found, err)
	// Output:
	// completed 1 none false {"id":1,"total":1999}
	// order 1, total 1999
	// order:43 found: false <nil>
}

func ExampleList() {
	_, store, done := openExampleDB()
	defer done()
	ctx := context.Background()
	pool := store

	for _, key := range []string{"refund:1", "refund:2", "refund:3", "charge:1"} {
		if _, err := idemsql.Run(ctx, pool, key, func(context.Context, *sql.Tx) (struct{}, error) {
			return struct{}{}, nil
		}); err != nil {
			fmt.Println(err)
			return
		}
	}
	// Every refund, two at a time.
	f := idemsql.ListFilter{Prefix: "refund:", Limit: 2}
	for {
		records, next, err := idemsql.List(ctx, pool, f)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, r := range records {
			fmt.Println(r.Key, r.Status)
		}
		if next == "" {
			break
		}
		f.After = next
	}
	st, err := idemsql.Stats(ctx, pool)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d rows, %d completed, %d in progress, %d to purge\n", st.Total, st.Completed, st.InProgress, st.Purgeable)
	// Output:
	// refund:1 completed
	// refund:2 completed
	// refund:3 completed
	// 4 rows, 4 completed, 0 in progress, 0 to purge
}
