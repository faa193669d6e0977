package bbwebhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
)

// NewReceiver returns a receiver listening on addr that checks deliveries against secret (when
// set) and hands the accepted ones to the waker; add it to the manager to run it.
func NewReceiver(addr string, secret []byte, metrics *Metrics, waker *PoolWaker, logger logr.Logger) *Receiver {
	w := &Receiver{addr: addr, waker: waker, logger: logger, events: make(chan Event, 256)}
	w.handler = &Handler{Secret: secret, OnEvent: w.enqueue, Metrics: metrics, Logger: logger}
	return w
}

// Receiver serves Bitbucket webhooks on every replica, leader or not: waking a pool is
// an annotation write the leader's watch picks up.
type Receiver struct {
	addr    string
	handler *Handler
	waker   *PoolWaker
	logger  logr.Logger
	events  chan Event
}

// NeedLeaderElection is false: followers take deliveries too.
func (w *Receiver) NeedLeaderElection() bool { return false }

// enqueue hands an event to the waker without blocking the delivery; when the queue is full
// the pools are being woken already.
func (w *Receiver) enqueue(_ context.Context, ev Event) {
	select {
	case w.events <- ev:
	default:
	}
}

// Start serves deliveries on the address until ctx ends.
func (w *Receiver) Start(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle("/webhooks/bitbucket", w.handler)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		return fmt.Errorf("listen for webhooks on %s: %w", w.addr, err)
	}
	w.logger.Info("serving Bitbucket webhooks", "address", ln.Addr().String(), "path", "/webhooks/bitbucket", "signed", len(w.handler.Secret) > 0)
	go w.wakeLoop(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve webhooks: %w", err)
	}
}

func (w *Receiver) wakeLoop(ctx context.Context) {
	for {
		var flush <-chan time.Time
		if at, ok := w.waker.NextFlush(); ok {
			// A timer nobody stops is collected once unreachable (Go 1.23).
			flush = time.NewTimer(time.Until(at)).C
		}
		select {
		case <-ctx.Done():
			return
		case ev := <-w.events:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, deferred, err := w.waker.Wake(wctx, WakeTarget{
				WorkspaceUUID: ev.WorkspaceUUID, RepositoryUUID: ev.RepositoryUUID, RepositoryFullName: ev.RepositoryFullName,
			})
			cancel()
			if err != nil {
				w.logger.Error(err, "wake pools", "event", ev.Key, "repository", ev.RepositoryUUID)
				continue
			}
			w.logger.V(1).Info("woke pools", "event", ev.Key, "repository", ev.RepositoryUUID, "pools", n, "deferred", deferred)
		case <-flush:
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			n, err := w.waker.Flush(wctx)
			cancel()
			if err != nil {
				w.logger.Error(err, "wake pools at the end of the coalescing window")
				continue
			}
			w.logger.V(1).Info("woke pools at the end of the coalescing window", "pools", n)
		}
	}
}
