package keys

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// jumpPaper is figure 1 of Lamping and Veach (2014) transliterated line by line from C++:
//
//	int32_t JumpConsistentHash(uint64_t key, int32_t num_buckets) {
//	  int64_t b = -1, j = 0;
//	  while (j < num_buckets) {
//	    b = j;
//	    key = key * 2862933555777941757ULL + 1;
//	    j = (b + 1) * (double(1LL << 31) / double((key >> 33) + 1));
//	  }
//	  return b;
//	}
//
// It is kept apart from Jump so that a change to Jump is checked against the paper.
func jumpPaper(key uint64, numBuckets int32) int32 {
	var b, j int64 = -1, 0
	for j < int64(numBuckets) {
		b = j
		key = key*2862933555777941757 + 1
		var twoTo31 = float64(int64(1) << 31)
		j = int64(float64(b+1) * (twoTo31 / float64((key>>33)+1)))
	}
	return int32(b)
}

// Vectors printed by the paper's C++ code above, compiled with g++ -O2.
var jumpVectors = []struct {
	key     uint64
	buckets int
	want    int
}{
	{0, 1, 0},
	{0, 1000, 0},
	{0, math.MaxInt32, 0},
	{1, 7, 6},
	{1, 18, 17},
	{1, 19, 17},
	{0xdeadbeef, 5, 3},
	{0xdeadbeef, 17, 16},
	{math.MaxUint64, 1, 0},
	{math.MaxUint64, 2, 1},
	{math.MaxUint64, 10, 9},
	{math.MaxUint64, math.MaxInt32, 699554662},
	{12345, 100, 29},
	{12345, 1000000, 546052},
	{998877665544332211, 65536, 47145},
	{42, 8, 2},
}

// jumpRows are the per-key vectors for 1, 2, ... buckets published with github.com/dgryski/go-jump
// ("generated from the reference C++ code"); where both have a value they agree with jumpVectors.
var jumpRows = []struct {
	key  uint64
	want []int
}{
	{0, []int{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
	{1, []int{0, 0, 0, 0, 0, 0, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 17, 17}},
	{0xdeadbeef, []int{0, 1, 2, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 16, 16, 16}},
	{0x0ddc0ffeebadf00d, []int{0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 15, 15, 15, 15}},
}

func TestJumpVectors(t *testing.T) {
	for _, v := range jumpVectors {
		if g, e := Jump(v.key, v.buckets), v.want; g != e {
			t.Errorf("Jump(%d, %d) = %d, want %d", v.key, v.buckets, g, e)
		}
	}
	for _, row := range jumpRows {
		for i, e := range row.want {
			if g := Jump(row.key, i+1); g != e {
				t.Errorf("Jump(%#x, %d) = %d, want %d", row.key, i+1, g, e)
			}
		}
	}
}

func TestJumpMatchesPaper(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		key := rng.Uint64()
		var n int32
		switch i % 3 {
		case 0:
			n = rng.Int32N(64) + 1
		case 1:
			n = rng.Int32N(1<<16) + 1
		default:
			n = rng.Int32N(math.MaxInt32) + 1
		}
		if g, e := Jump(key, int(n)), int(jumpPaper(key, n)); g != e {
			t.Fatalf("Jump(%d, %d) = %d, paper's code says %d", key, n, g, e)
		}
	}
}

func TestJumpNoBuckets(t *testing.T) {
	for _, n := range []int{0, -1, math.MinInt} {
		if g := Jump(12345, n); g != -1 {
			t.Errorf("Jump(12345, %d) = %d, want -1", n, g)
		}
		if g := Owner("alice", n); g != -1 {
			t.Errorf("Owner(alice, %d) = %d, want -1", n, g)
		}
	}
}

func TestJumpInRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100000; i++ {
		key, n := rng.Uint64(), rng.IntN(1<<20)+1
		if g := Jump(key, n); g < 0 || g >= n {
			t.Fatalf("Jump(%d, %d) = %d, outside [0, %d)", key, n, g, n)
		}
	}
}

// Owner vectors: xxhash64 from github.com/cespare/xxhash/v2, bucket from the paper's C++ code.
func TestOwnerVectors(t *testing.T) {
	if g, e := xxhash.Sum64String(""), uint64(0xef46db3751d8e999); g != e {
		t.Fatalf("xxhash64(\"\") = %#x, want %#x (XXH64 of empty input, seed 0)", g, e)
	}
	vectors := []struct {
		key  string
		want [6]int // owner among 1, 2, 4, 8, 16, 100 workers
	}{
		{"", [6]int{0, 1, 2, 7, 7, 40}},
		{"alice", [6]int{0, 1, 1, 1, 14, 31}},
		{"bob", [6]int{0, 1, 2, 2, 2, 52}},
		{"room-42", [6]int{0, 1, 1, 1, 1, 47}},
		{"tenant/7", [6]int{0, 0, 2, 4, 8, 94}},
		{"Ω", [6]int{0, 1, 1, 7, 7, 29}},
	}
	for _, v := range vectors {
		for i, n := range [6]int{1, 2, 4, 8, 16, 100} {
			if g, e := Owner(v.key, n), v.want[i]; g != e {
				t.Errorf("Owner(%q, %d) = %d, want %d", v.key, n, g, e)
			}
		}
	}
}

// Growing from n to n+1 workers moves exactly the keys whose new owner is n, and about 1/(n+1)
// of all keys.
func TestOwnerGrowMovesOnlyToNewWorker(t *testing.T) {
	const keys = 1000
	for n := 1; n <= 16; n++ {
		moved := 0
		for i := 0; i < keys; i++ {
			key := "user-" + strconv.Itoa(i)
			before, after := Owner(key, n), Owner(key, n+1)
			if (before != after) != (after == n) {
				t.Fatalf("%q: owner %d of %d workers, %d of %d: only keys moving to the new worker %d may move",
					key, before, n, after, n+1, n)
			}
			if before != after {
				moved++
			}
		}
		want := float64(keys) / float64(n+1)
		if d := math.Abs(float64(moved) - want); d > 5*math.Sqrt(want)+5 {
			t.Errorf("%d→%d workers moved %d of %d keys, want about %.0f", n, n+1, moved, keys, want)
		}
	}
}

func TestOwnerBalance(t *testing.T) {
	const keys, workers = 10000, 4
	var count [workers]int
	for i := 0; i < keys; i++ {
		count[Owner("key-"+strconv.Itoa(i), workers)]++
	}
	want := keys / workers
	for w, c := range count {
		if c < want*3/4 || c > want*5/4 {
			t.Errorf("worker %d owns %d of %d keys, want %d ±25%% (all: %v)", w, c, keys, want, count)
		}
	}
}

func BenchmarkOwner(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Owner("user-12345", 8)
	}
}

func BenchmarkJump(b *testing.B) {
	for _, n := range []int{8, 1024} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			key := uint64(0x0ddc0ffeebadf00d)
			for b.Loop() {
				key += uint64(Jump(key, n))*2 + 1 // a dependent chain, so the call is not hoisted
			}
		})
	}
}
