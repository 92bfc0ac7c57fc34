package idemsql_test

import (
	"testing"

	"github.com/idemsql/idemsql/idemsql"
)

type benchResult struct {
	ID       string   `json:"id"`
	Amount   int64    `json:"amount"`
	Currency string   `json:"currency"`
	Paid     bool     `json:"paid"`
	Tags     []string `json:"tags,omitempty"`
}

func BenchmarkJSONCodec(b *testing.B) {
	v := benchResult{ID: "inv_8d1f0c", Amount: 4200, Currency: "EUR", Paid: true, Tags: []string{"web"}}
	data, err := idemsql.JSON.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := idemsql.JSON.Marshal(v); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out benchResult
			if err := idemsql.JSON.Unmarshal(data, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDeriveKey(b *testing.B) {
	req := payment{Amount: 4200, Currency: "EUR", Tags: []string{"web"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := idemsql.DeriveKey("charge", "order-42", req); err != nil {
			b.Fatal(err)
		}
	}
}
