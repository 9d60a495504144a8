package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestPairedRatios(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ours, other []sample
		want        []float64
	}{
		{
			name:  "each round's pair",
			ours:  []sample{{round: 0, rate: 90}, {round: 1, rate: 60}},
			other: []sample{{round: 0, rate: 100}, {round: 1, rate: 50}},
			want:  []float64{0.9, 1.2},
		},
		{
			name:  "a round one side failed is left out",
			ours:  []sample{{round: 0, rate: 90}, {round: 2, rate: 80}},
			other: []sample{{round: 0, rate: 100}, {round: 1, rate: 70}, {round: 2, rate: 100}},
			want:  []float64{0.9, 0.8},
		},
		{
			name:  "no pair",
			ours:  []sample{{round: 0, rate: 90}},
			other: []sample{{round: 1, rate: 100}},
		},
		{
			name:  "nothing measured on the other side",
			ours:  []sample{{round: 0, rate: 90}},
			other: []sample{{round: 0, rate: 0}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDeltaSlice(t, tc.want, pairedRatios(tc.ours, tc.other), 1e-9)
		})
	}
}
