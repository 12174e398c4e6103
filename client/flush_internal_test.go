package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Flush waits for the ack jobs running when it is called (entries stored
// but not yet acked at their relay), and returns when they end.
func TestFlushWaitsForAckJobs(t *testing.T) {
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	done := c.startAckJob()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = c.Flush(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 acks in flight") {
		t.Fatalf("Flush during an ack job: %v", err)
	}

	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(context.Background()) }()
	done()
	if err := <-flushed; err != nil {
		t.Fatalf("Flush once the ack job ended: %v", err)
	}
}
